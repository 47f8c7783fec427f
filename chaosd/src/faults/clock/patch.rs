//! Patching one process: stop it, map the detour page near its vDSO, hook the clock entries,
//! let it go. And the reverse: restore the entries' original bytes.

use iced_x86::{Code, Decoder, DecoderOptions};

use super::{
    ClockPatchError,
    detour::{
        self, ClockFunction, DEADLINE_AT, DRIFT_AT, HOOK_LEN, MAGIC, MAGIC_V1, Prologue, RECORDS,
        RECORDS_AT, SkewValues, VALUES_AT,
    },
    tracee::StoppedProcess,
    vdso::{self, ProcMem, Vdso},
};

const SYS_MMAP: u64 = 9;

/// What patching did to a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patched {
    /// A new detour page was mapped at this address.
    NewPage(u64),
    /// The process already had a chaosd detour page (e.g. from a daemon that died, or inherited
    /// through fork): its values were updated.
    Updated(u64),
}

/// Skews `pid`'s clocks with `values`.
pub fn patch_process(pid: u32, mut values: SkewValues) -> Result<Patched, ClockPatchError> {
    // The process reads CLOCK_MONOTONIC and CLOCK_BOOTTIME through its time namespace: move
    // the deadline and those clocks' anchors with it.
    let offsets =
        std::fs::read_to_string(format!("/proc/{pid}/timens_offsets")).unwrap_or_default();
    let (monotonic, boottime) = (
        parse_timens(&offsets, "monotonic", "1"),
        parse_timens(&offsets, "boottime", "7"),
    );
    values.deadline_ns = values.deadline_ns.saturating_add_signed(monotonic);
    for (id, shift) in [
        (1, monotonic),
        (4, monotonic),
        (6, monotonic),
        (7, boottime),
        (9, boottime),
    ] {
        values.anchors[id] = values.anchors[id].saturating_add(shift);
    }
    let mut p = StoppedProcess::seize(pid)?;
    let maps = p.maps()?;
    let vdso = Vdso::read(&p.mem, &maps)?;
    match existing_page(&p.mem, &vdso) {
        Some((page, MAGIC)) => {
            let io = |e| ClockPatchError::io("updating the detour page", e);
            // Drift words first: a reader between the two writes sees the old deadline.
            p.mem
                .write(page + DRIFT_AT, &values.drift_bytes())
                .map_err(io)?;
            p.mem
                .write(page + VALUES_AT, &values.to_bytes())
                .map_err(io)?;
            return Ok(Patched::Updated(page));
        }
        // A page of the first layout (an older chaosd): put its entries back, then hook anew.
        Some((page, _)) => restore_entries(&p.mem, page)?,
        None => {}
    }
    let prologues = prologues(&vdso)?;
    let page = vdso::free_page_near_vdso(&maps).ok_or(ClockPatchError::NoRoom)?;
    let image = detour::assemble(page, values, &prologues)?;
    map_page(&mut p, &vdso, page)?;
    let hooked: Vec<(u64, u64)> = prologues
        .iter()
        .map(|x| (x.entry, x.entry + x.len))
        .collect();
    p.step_out_of(&hooked)?;
    install(&p.mem, page, &image)?;
    Ok(Patched::NewPage(page))
}

/// The `<clock> <s> <ns>` line of /proc/PID/timens_offsets for `name` (the clock may also be
/// given by its id), ns; 0 without one.
fn parse_timens(text: &str, name: &str, id: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [clock, s, ns] if *clock == name || *clock == id => {
                    Some(s.parse::<i64>().ok()? * 1_000_000_000 + ns.parse::<i64>().ok()?)
                }
                _ => None,
            }
        })
        .unwrap_or(0)
}

/// The prologues of the vDSO's clock functions, checked movable.
pub fn prologues(vdso: &Vdso) -> Result<Vec<Prologue>, ClockPatchError> {
    let functions = [
        (ClockFunction::ClockGettime, Some(vdso.clock_gettime)),
        (ClockFunction::Gettimeofday, vdso.gettimeofday),
        (ClockFunction::Time, vdso.time),
    ];
    functions
        .into_iter()
        .filter_map(|(kind, f)| f.map(|f| (kind, f)))
        .map(|(kind, f)| detour::decode_prologue(kind, vdso.code(f), f.addr))
        .collect()
}

/// Writes the page, then the hooks.
pub fn install(mem: &ProcMem, page: u64, image: &detour::PageImage) -> Result<(), ClockPatchError> {
    mem.write(page, &image.bytes)
        .map_err(|e| ClockPatchError::io("writing the detour page", e))?;
    for &(entry, stub) in &image.jumps {
        mem.write(entry, &detour::jmp_rel32(entry, stub)?)
            .map_err(|e| ClockPatchError::io("writing a vDSO hook", e))?;
    }
    Ok(())
}

/// Maps an anonymous read+exec page at exactly `page` in the stopped process.
fn map_page(p: &mut StoppedProcess, vdso: &Vdso, page: u64) -> Result<(), ClockPatchError> {
    let insn = syscall_instruction(vdso).ok_or_else(|| {
        ClockPatchError::BadVdso("no syscall instruction to run mmap with".into())
    })?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
    let args = [
        page,
        vdso::PAGE,
        (libc::PROT_READ | libc::PROT_EXEC) as u64,
        flags as u64,
        u64::MAX,
        0,
    ];
    let got = p.syscall(insn, SYS_MMAP, args)?;
    if got as u64 == page {
        return Ok(());
    }
    if (-4095..0).contains(&got) {
        return Err(ClockPatchError::Syscall {
            call: "mmap",
            errno: nix::errno::Errno::from_raw(-got as i32),
        });
    }
    // An old kernel without MAP_FIXED_NOREPLACE may place it elsewhere: not usable.
    Err(ClockPatchError::NoRoom)
}

/// Address of a `syscall` instruction in the vDSO's clock functions.
fn syscall_instruction(vdso: &Vdso) -> Option<u64> {
    [Some(vdso.clock_gettime), vdso.gettimeofday, vdso.time]
        .into_iter()
        .flatten()
        .find_map(|f| {
            Decoder::with_ip(64, vdso.code(f), f.addr, DecoderOptions::NONE)
                .into_iter()
                .find(|i| i.code() == Code::Syscall)
                .map(|i| i.ip())
        })
}

/// The chaosd detour page the clock_gettime entry jumps to, if it is hooked, and its magic
/// ([`MAGIC`], or [`MAGIC_V1`] for the first layout).
pub fn existing_page(mem: &ProcMem, vdso: &Vdso) -> Option<(u64, u64)> {
    let entry = vdso.clock_gettime.addr;
    let head = mem.read(entry, HOOK_LEN).ok()?;
    let page = detour::jmp_target(entry, &head)? & !(vdso::PAGE - 1);
    let magic = mem.read_u64(page).ok()?;
    [MAGIC, MAGIC_V1].contains(&magic).then_some((page, magic))
}

/// Restores the original vDSO entries of `pid` if chaosd hooked them; true if it did. The
/// detour page stays mapped (a thread may still be returning through it) but inert.
pub fn unpatch_process(pid: u32) -> Result<bool, ClockPatchError> {
    let p = StoppedProcess::seize(pid)?;
    let maps = p.maps()?;
    let vdso = Vdso::read(&p.mem, &maps)?;
    let Some((page, _)) = existing_page(&p.mem, &vdso) else {
        return Ok(false);
    };
    restore_entries(&p.mem, page)?;
    Ok(true)
}

/// Disables the page (deadline 0) and writes back the original bytes of every hooked entry.
pub fn restore_entries(mem: &ProcMem, page: u64) -> Result<(), ClockPatchError> {
    let io = |e| ClockPatchError::io("restoring the vDSO", e);
    mem.write(page + DEADLINE_AT, &0u64.to_le_bytes())
        .map_err(io)?;
    for i in 0..RECORDS as u64 {
        let at = page + RECORDS_AT + 16 * i;
        let entry = mem.read_u64(at).map_err(io)?;
        if entry == 0 {
            continue;
        }
        let original = mem.read(at + 8, HOOK_LEN).map_err(io)?;
        mem.write(entry, &original).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_namespace_offsets_move_the_deadline() {
        let m = |t: &str| parse_timens(t, "monotonic", "1");
        assert_eq!(m("monotonic 0 0\nboottime 0 0\n"), 0);
        assert_eq!(m("boottime 5 0\nmonotonic -3 500\n"), -2_999_999_500);
        assert_eq!(m(""), 0);
        assert_eq!(
            parse_timens("7 5 0\n1 0 0\n", "boottime", "7"),
            5_000_000_000
        );
    }
}
