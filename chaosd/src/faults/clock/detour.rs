//! The detour page: data (magic, deadline, offset, clock mask, the original entry bytes, the
//! drift rate and per-clock anchors), the relocated prologues of the vDSO clock functions, and
//! one wrapper stub per function.
//!
//! The vDSO entry becomes `jmp stub`. A stub calls the relocated original (its prologue copy,
//! then a `jmp` back behind the overwritten bytes), so the clock is still read in user space,
//! then, when the clock is in the mask and CLOCK_MONOTONIC_COARSE (read through the same vDSO,
//! a few ns) is still before the deadline, skews the result (timespec, timeval or time_t):
//!
//! - without drift it adds the offset (whole seconds plus a sub-second part);
//! - with drift it returns `t + offset + (t - anchor[clock]) * rate_delta`, in nanoseconds:
//!   `rate_delta` is fixed point with [`RATE_SHIFT`] fraction bits (a 64x64 -> 128-bit multiply,
//!   so no overflow for any offset or fault length), `anchor[clock]` that clock's reading when
//!   the fault began. `rate_delta > -1`, so a clock that never went backwards still does not.
//!
//! Past the deadline the stubs pass results through unchanged: a process stays correct even
//! if chaosd dies and never restores it.

use iced_x86::{
    BlockEncoderOptions, Decoder, DecoderOptions, FlowControl, Instruction,
    code_asm::{
        AsmRegister64, CodeAssembler, CodeLabel, al, eax, ecx, edi, edx, ptr, qword_ptr, r8, rax,
        rcx, rdi, rdx, rsi, rsp,
    },
};

use super::ClockPatchError;

/// First word of a detour page ("CHAOSCK" + layout version 2: with drift).
pub const MAGIC: u64 = u64::from_le_bytes(*b"CHAOSCK2");
/// The first layout's magic (no drift words): still recognised, to restore such a page.
pub const MAGIC_V1: u64 = u64::from_le_bytes(*b"CHAOSCK1");
/// Byte offsets of the data fields in the page.
pub const DEADLINE_AT: u64 = 8;
pub const VALUES_AT: u64 = 8;
/// Records of the hooked entries: (entry address, its original first 8 bytes) × 3.
pub const RECORDS_AT: u64 = 48;
pub const RECORDS: usize = 3;
/// The drift words: rate delta, offset in ns, then one anchor per clock id.
pub const DRIFT_AT: u64 = RECORDS_AT + 16 * RECORDS as u64;
/// Clock ids 0..CLOCK_IDS have an anchor (CLOCK_TAI is 11).
pub const CLOCK_IDS: usize = 12;
/// Where the code begins, behind the data.
pub const CODE_AT: u64 = DRIFT_AT + 16 + 8 * CLOCK_IDS as u64;
/// Fraction bits of the fixed-point rate delta.
pub const RATE_SHIFT: u32 = 32;
/// Bytes the hook overwrites at an entry: `jmp rel32`.
pub const HOOK_LEN: usize = 5;

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC_COARSE: i32 = 6;
const NS_PER_S: i32 = 1_000_000_000;
const US_PER_S: i32 = 1_000_000;

/// What a stub applies, as stored in the page (all mutable in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkewValues {
    /// CLOCK_MONOTONIC ns after which the stubs stop adding the offset; 0 disables at once.
    pub deadline_ns: u64,
    /// The offset split as whole seconds (floored) plus 0..1e9 ns.
    pub offset_sec: i64,
    pub offset_nsec: u64,
    /// Bit per clock id.
    pub clock_mask: u64,
    /// `rate - 1` in units of 2^-[`RATE_SHIFT`]; 0: no drift (the offset alone).
    pub rate_delta: i64,
    /// Each clock's reading (ns) when the drift began, as the patched process reads it.
    pub anchors: [i64; CLOCK_IDS],
}

impl SkewValues {
    pub fn new(offset_ns: i64, deadline_ns: u64, clock_mask: u64) -> Self {
        SkewValues {
            deadline_ns,
            offset_sec: offset_ns.div_euclid(1_000_000_000),
            offset_nsec: offset_ns.rem_euclid(1_000_000_000) as u64,
            clock_mask,
            rate_delta: 0,
            anchors: [0; CLOCK_IDS],
        }
    }

    /// The same with a drift of `rate_delta` from `anchors`.
    pub fn with_drift(self, rate_delta: i64, anchors: [i64; CLOCK_IDS]) -> Self {
        SkewValues {
            rate_delta,
            anchors,
            ..self
        }
    }

    /// The offset in ns.
    pub fn offset_ns(&self) -> i64 {
        self.offset_sec * 1_000_000_000 + self.offset_nsec as i64
    }

    /// Deadline, seconds, nanoseconds, microseconds, mask: the page's words at [`VALUES_AT`].
    pub fn to_bytes(self) -> Vec<u8> {
        [
            self.deadline_ns,
            self.offset_sec as u64,
            self.offset_nsec,
            self.offset_nsec / 1000,
            self.clock_mask,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
    }

    /// Rate delta, offset in ns, anchors: the page's words at [`DRIFT_AT`].
    pub fn drift_bytes(self) -> Vec<u8> {
        [self.rate_delta, self.offset_ns()]
            .iter()
            .chain(self.anchors.iter())
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// What the stubs compute for a reading `t_ns` of clock `id` (while active, in the mask),
    /// for tests and the docs: the same arithmetic in Rust.
    pub fn skewed_ns(&self, id: usize, t_ns: i64) -> i64 {
        if self.rate_delta == 0 {
            return t_ns + self.offset_ns();
        }
        let d = i128::from(t_ns - self.anchors[id]);
        let adj = (d * i128::from(self.rate_delta)) >> RATE_SHIFT;
        t_ns + adj as i64 + self.offset_ns()
    }
}

/// `rate - 1` as the page stores it.
pub fn rate_delta(rate: f64) -> i64 {
    ((rate - 1.0) * (1u64 << RATE_SHIFT) as f64).round() as i64
}

/// Which vDSO function a prologue belongs to: decides the stub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockFunction {
    ClockGettime,
    Gettimeofday,
    Time,
}

/// The instructions covering the first [`HOOK_LEN`] bytes of a function, to be relocated.
#[derive(Clone, Debug)]
pub struct Prologue {
    pub function: ClockFunction,
    pub entry: u64,
    /// Bytes of whole instructions replaced (>= HOOK_LEN).
    pub len: u64,
    pub instructions: Vec<Instruction>,
    pub original: [u8; 8],
}

/// Decodes the prologue of `code` (the whole function, mapped at `entry`) and checks that it
/// can move: plain instructions or relative branches, and no branch in the function lands
/// inside the bytes the hook overwrites.
pub fn decode_prologue(
    function: ClockFunction,
    code: &[u8],
    entry: u64,
) -> Result<Prologue, ClockPatchError> {
    let refuse = |reason: String| ClockPatchError::Unrelocatable {
        function: format!("{function:?}"),
        reason,
    };
    if code.len() < 8 {
        return Err(refuse(format!("it is only {} bytes long", code.len())));
    }
    let all: Vec<Instruction> = Decoder::with_ip(64, code, entry, DecoderOptions::NONE)
        .into_iter()
        .collect();
    let mut instructions = Vec::new();
    let mut len = 0;
    for instr in &all {
        if len >= HOOK_LEN as u64 {
            break;
        }
        if instr.is_invalid() {
            return Err(refuse(format!("undecodable bytes at +{len}")));
        }
        let movable = match instr.flow_control() {
            FlowControl::Next => true,
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                instr.is_jcc_short_or_near() || instr.is_jmp_short_or_near()
            }
            _ => false,
        };
        if !movable {
            return Err(refuse(format!(
                "{:?} in its first {HOOK_LEN} bytes",
                instr.code()
            )));
        }
        len += instr.len() as u64;
        instructions.push(*instr);
    }
    for instr in &all {
        let target = instr.near_branch_target();
        if target > entry && target < entry + len {
            return Err(refuse(format!(
                "a branch at {:#x} lands inside the bytes the hook replaces",
                instr.ip()
            )));
        }
    }
    Ok(Prologue {
        function,
        entry,
        len,
        instructions,
        original: code[..8].try_into().expect("checked length"),
    })
}

/// An assembled detour page and where each hooked entry must jump.
pub struct PageImage {
    pub bytes: Vec<u8>,
    /// (entry, stub) per hooked function.
    pub jumps: Vec<(u64, u64)>,
}

/// `jmp rel32` from `from` to `to` (both within ±2 GiB).
pub fn jmp_rel32(from: u64, to: u64) -> Result<[u8; HOOK_LEN], ClockPatchError> {
    let rel = to.wrapping_sub(from + HOOK_LEN as u64) as i64;
    let rel = i32::try_from(rel).map_err(|_| ClockPatchError::NoRoom)?;
    let mut b = [0xe9, 0, 0, 0, 0];
    b[1..].copy_from_slice(&rel.to_le_bytes());
    Ok(b)
}

/// Where a `jmp rel32` at `at` goes, if `bytes` are one.
pub fn jmp_target(at: u64, bytes: &[u8]) -> Option<u64> {
    if bytes.len() < HOOK_LEN || bytes[0] != 0xe9 {
        return None;
    }
    let rel = i32::from_le_bytes(bytes[1..5].try_into().ok()?);
    Some((at + HOOK_LEN as u64).wrapping_add(rel as i64 as u64))
}

/// Labels of the page's data words.
struct Data {
    deadline: CodeLabel,
    offset_sec: CodeLabel,
    offset_nsec: CodeLabel,
    offset_usec: CodeLabel,
    mask: CodeLabel,
    rate: CodeLabel,
    offset_ns: CodeLabel,
    anchors: CodeLabel,
}

/// Assembles the page for address `page`. `prologues` must hold the clock_gettime prologue
/// (the others call it); gettimeofday and time are optional.
pub fn assemble(
    page: u64,
    values: SkewValues,
    prologues: &[Prologue],
) -> Result<PageImage, ClockPatchError> {
    let asm_err = |e: iced_x86::IcedError| ClockPatchError::Assemble(e.to_string());
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    let data = emit_data(&mut a, values, prologues).map_err(asm_err)?;
    let cgt = prologues
        .iter()
        .find(|p| p.function == ClockFunction::ClockGettime)
        .ok_or_else(|| ClockPatchError::BadVdso("no clock_gettime prologue".into()))?;
    let orig_cgt = emit_original(&mut a, cgt).map_err(asm_err)?;
    let active = emit_active(&mut a, &data, orig_cgt).map_err(asm_err)?;
    let mut stubs = Vec::new();
    for p in prologues {
        let stub = match p.function {
            ClockFunction::ClockGettime => emit_clock_gettime(&mut a, &data, orig_cgt, active),
            ClockFunction::Gettimeofday => {
                let orig = emit_original(&mut a, p).map_err(asm_err)?;
                emit_gettimeofday(&mut a, &data, orig, active)
            }
            ClockFunction::Time => {
                let orig = emit_original(&mut a, p).map_err(asm_err)?;
                emit_time(&mut a, &data, orig_cgt, orig, active)
            }
        }
        .map_err(asm_err)?;
        stubs.push((p.entry, stub));
    }
    let result = a
        .assemble_options(page, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .map_err(asm_err)?;
    let jumps = stubs
        .into_iter()
        .map(|(entry, label)| result.label_ip(&label).map(|ip| (entry, ip)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(asm_err)?;
    let bytes = result.inner.code_buffer;
    if bytes.len() as u64 > super::vdso::PAGE {
        return Err(ClockPatchError::Assemble(format!(
            "the detour is {} bytes, more than a page",
            bytes.len()
        )));
    }
    Ok(PageImage { bytes, jumps })
}

type Asm = Result<(), iced_x86::IcedError>;

/// The data words, first in the page so their offsets are fixed.
fn emit_data(
    a: &mut CodeAssembler,
    v: SkewValues,
    prologues: &[Prologue],
) -> Result<Data, iced_x86::IcedError> {
    let word = |a: &mut CodeAssembler, value: u64| -> Result<CodeLabel, iced_x86::IcedError> {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.dq(&[value])?;
        Ok(l)
    };
    word(a, MAGIC)?;
    let (deadline, offset_sec, offset_nsec, offset_usec, mask) = (
        word(a, v.deadline_ns)?,
        word(a, v.offset_sec as u64)?,
        word(a, v.offset_nsec)?,
        word(a, v.offset_nsec / 1000)?,
        word(a, v.clock_mask)?,
    );
    for i in 0..RECORDS {
        let (entry, original) = prologues
            .get(i)
            .map_or((0, 0), |p| (p.entry, u64::from_le_bytes(p.original)));
        a.dq(&[entry, original])?;
    }
    let rate = word(a, v.rate_delta as u64)?;
    let offset_ns = word(a, v.offset_ns() as u64)?;
    let anchors = word(a, v.anchors[0] as u64)?;
    for anchor in &v.anchors[1..] {
        a.dq(&[*anchor as u64])?;
    }
    Ok(Data {
        deadline,
        offset_sec,
        offset_nsec,
        offset_usec,
        mask,
        rate,
        offset_ns,
        anchors,
    })
}

/// The relocated prologue followed by a jump back behind it: calling it runs the original.
fn emit_original(a: &mut CodeAssembler, p: &Prologue) -> Result<CodeLabel, iced_x86::IcedError> {
    let mut l = a.create_label();
    a.set_label(&mut l)?;
    for instr in &p.instructions {
        a.add_instruction(*instr)?;
    }
    a.jmp(p.entry + p.len)?;
    Ok(l)
}

/// `active()`: eax = 1 while CLOCK_MONOTONIC_COARSE is before the deadline, else 0.
/// Clobbers the caller-saved registers.
fn emit_active(
    a: &mut CodeAssembler,
    d: &Data,
    orig_cgt: CodeLabel,
) -> Result<CodeLabel, iced_x86::IcedError> {
    let mut entry = a.create_label();
    let mut inactive = a.create_label();
    a.set_label(&mut entry)?;
    // Called with rsp ≡ 8 (mod 16): 24 bytes realign it and hold a timespec at [rsp].
    a.sub(rsp, 24)?;
    a.mov(edi, CLOCK_MONOTONIC_COARSE)?;
    a.mov(rsi, rsp)?;
    a.call(orig_cgt)?;
    a.test(eax, eax)?;
    a.jnz(inactive)?;
    a.imul_3(rax, qword_ptr(rsp), NS_PER_S)?;
    a.add(rax, qword_ptr(rsp + 8))?;
    a.cmp(rax, qword_ptr(d.deadline))?;
    a.jae(inactive)?;
    a.mov(eax, 1)?;
    a.add(rsp, 24)?;
    a.ret()?;
    a.set_label(&mut inactive)?;
    a.xor(eax, eax)?;
    a.add(rsp, 24)?;
    a.ret()?;
    Ok(entry)
}

/// Adds the offset to the {sec, sub} pair at [ptr_reg]: `sub` is ns or µs (`unit` per second).
fn emit_add_offset(a: &mut CodeAssembler, d: &Data, sub_offset: CodeLabel, unit: i32) -> Asm {
    let mut no_carry = a.create_label();
    a.mov(rax, qword_ptr(rsi + 8))?;
    a.add(rax, qword_ptr(sub_offset))?;
    a.mov(rcx, qword_ptr(rsi))?;
    a.add(rcx, qword_ptr(d.offset_sec))?;
    a.cmp(rax, unit)?;
    a.jb(no_carry)?;
    a.sub(rax, unit)?;
    a.inc(rcx)?;
    a.set_label(&mut no_carry)?;
    a.mov(qword_ptr(rsi + 8), rax)?;
    a.mov(qword_ptr(rsi), rcx)?;
    Ok(())
}

/// Skews the {sec, sub} pair at [rsi] (`sub` in units of `unit` per second) for the clock id
/// at [rsp+8]: the offset alone without drift, else offset plus drift since the anchor. Ends
/// at `then`, which the caller places right behind. Clobbers rax, rcx, rdx, r8.
fn emit_skew(
    a: &mut CodeAssembler,
    d: &Data,
    sub_offset: CodeLabel,
    unit: i32,
    then: CodeLabel,
) -> Asm {
    let mut drift = a.create_label();
    a.cmp(qword_ptr(d.rate), 0)?;
    a.jne(drift)?;
    emit_add_offset(a, d, sub_offset, unit)?;
    a.jmp(then)?;
    a.set_label(&mut drift)?;
    emit_drift(a, d, unit)
}

/// `t' = t + offset + ((t - anchor[id]) * rate) >> RATE_SHIFT` on the pair at [rsi], in ns.
fn emit_drift(a: &mut CodeAssembler, d: &Data, unit: i32) -> Asm {
    let per_sub = NS_PER_S / unit;
    let mut positive = a.create_label();
    a.imul_3(rax, qword_ptr(rsi), NS_PER_S)?;
    a.mov(rcx, qword_ptr(rsi + 8))?;
    if per_sub != 1 {
        a.imul_3(rcx, rcx, per_sub)?;
    }
    a.add(rax, rcx)?;
    a.mov(r8, rax)?;
    a.mov(rcx, qword_ptr(rsp + 8))?;
    a.lea(rdx, ptr(d.anchors))?;
    a.sub(rax, qword_ptr(rdx + rcx * 8))?;
    a.imul(qword_ptr(d.rate))?;
    a.shrd(rax, rdx, RATE_SHIFT)?;
    a.add(rax, r8)?;
    a.add(rax, qword_ptr(d.offset_ns))?;
    // Back to seconds and a remainder in 0..1e9 (floored: times before 1970 too).
    a.cqo()?;
    a.mov(rcx, i64::from(NS_PER_S))?;
    a.idiv(rcx)?;
    a.test(rdx, rdx)?;
    a.jns(positive)?;
    a.add(rdx, rcx)?;
    a.dec(rax)?;
    a.set_label(&mut positive)?;
    a.mov(qword_ptr(rsi), rax)?;
    if per_sub != 1 {
        a.mov(rax, rdx)?;
        a.xor(edx, edx)?;
        a.mov(ecx, per_sub)?;
        a.div(rcx)?;
        a.mov(rdx, rax)?;
    }
    a.mov(qword_ptr(rsi + 8), rdx)?;
    Ok(())
}

/// `int clock_gettime(clockid_t id, struct timespec *ts)`.
fn emit_clock_gettime(
    a: &mut CodeAssembler,
    d: &Data,
    orig: CodeLabel,
    active: CodeLabel,
) -> Result<CodeLabel, iced_x86::IcedError> {
    let mut entry = a.create_label();
    a.set_label(&mut entry)?;
    // Clocks outside the mask (and negative ids: CPU clocks) go straight to the original.
    a.cmp(edi, 63)?;
    a.ja(orig)?;
    a.mov(ecx, edi)?;
    a.mov(rax, qword_ptr(d.mask))?;
    a.bt(rax, rcx)?;
    a.jae(orig)?;
    emit_call_then_skew(a, d, orig, active, rsi, d.offset_nsec, NS_PER_S)?;
    Ok(entry)
}

/// The common tail of the timespec/timeval stubs (rcx: the clock id, zero-extended): keeps
/// the result pointer `result_ptr` and the id, calls
/// the original, and on success (while the fault is active) adds the offset to
/// `{sec, sub}` at that pointer (`sub` in units of `unit` per second); returns 0 or the
/// original's error.
fn emit_call_then_skew(
    a: &mut CodeAssembler,
    d: &Data,
    orig: CodeLabel,
    active: CodeLabel,
    result_ptr: AsmRegister64,
    sub_offset: CodeLabel,
    unit: i32,
) -> Asm {
    let mut done = a.create_label();
    let mut success = a.create_label();
    a.sub(rsp, 24)?;
    a.mov(qword_ptr(rsp), result_ptr)?;
    a.mov(qword_ptr(rsp + 8), rcx)?;
    a.call(orig)?;
    a.test(eax, eax)?;
    a.jnz(done)?;
    a.call(active)?;
    a.test(eax, eax)?;
    a.jz(success)?;
    a.mov(rsi, qword_ptr(rsp))?;
    emit_skew(a, d, sub_offset, unit, success)?;
    a.set_label(&mut success)?;
    a.xor(eax, eax)?;
    a.set_label(&mut done)?;
    a.add(rsp, 24)?;
    a.ret()
}

/// `int gettimeofday(struct timeval *tv, struct timezone *tz)`: skewed with CLOCK_REALTIME.
fn emit_gettimeofday(
    a: &mut CodeAssembler,
    d: &Data,
    orig: CodeLabel,
    active: CodeLabel,
) -> Result<CodeLabel, iced_x86::IcedError> {
    let mut entry = a.create_label();
    a.set_label(&mut entry)?;
    a.test(rdi, rdi)?;
    a.jz(orig)?;
    a.mov(rax, qword_ptr(d.mask))?;
    a.test(al, 1 << CLOCK_REALTIME)?;
    a.jz(orig)?;
    a.mov(ecx, CLOCK_REALTIME)?;
    emit_call_then_skew(a, d, orig, active, rdi, d.offset_usec, US_PER_S)?;
    Ok(entry)
}

/// `time_t time(time_t *t)`: CLOCK_REALTIME through clock_gettime, skewed, seconds.
fn emit_time(
    a: &mut CodeAssembler,
    d: &Data,
    orig_cgt: CodeLabel,
    orig: CodeLabel,
    active: CodeLabel,
) -> Result<CodeLabel, iced_x86::IcedError> {
    let mut entry = a.create_label();
    let mut original = a.create_label();
    let mut no_store = a.create_label();
    a.set_label(&mut entry)?;
    a.mov(rax, qword_ptr(d.mask))?;
    a.test(al, 1 << CLOCK_REALTIME)?;
    a.jz(orig)?;
    // [rsp]: the caller's pointer; [rsp+8]: the clock id; [rsp+16]: a timespec. 40 bytes
    // realign rsp.
    a.sub(rsp, 40)?;
    a.mov(qword_ptr(rsp), rdi)?;
    a.mov(qword_ptr(rsp + 8), CLOCK_REALTIME)?;
    a.call(active)?;
    a.test(eax, eax)?;
    a.jz(original)?;
    a.mov(edi, CLOCK_REALTIME)?;
    a.lea(rsi, ptr(rsp + 16))?;
    a.call(orig_cgt)?;
    a.test(eax, eax)?;
    a.jnz(original)?;
    a.lea(rsi, ptr(rsp + 16))?;
    let mut skewed = a.create_label();
    emit_skew(a, d, d.offset_nsec, NS_PER_S, skewed)?;
    a.set_label(&mut skewed)?;
    a.mov(rax, qword_ptr(rsp + 16))?;
    a.mov(rdi, qword_ptr(rsp))?;
    a.add(rsp, 40)?;
    a.test(rdi, rdi)?;
    a.jz(no_store)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.set_label(&mut no_store)?;
    a.ret()?;
    a.set_label(&mut original)?;
    a.mov(rdi, qword_ptr(rsp))?;
    a.add(rsp, 40)?;
    a.jmp(orig)?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_split_into_floored_seconds_and_nanoseconds() {
        let v = SkewValues::new(-1_500_000_000, 7, 1);
        assert_eq!((v.offset_sec, v.offset_nsec), (-2, 500_000_000));
        let v = SkewValues::new(90_000_000_001, 7, 1);
        assert_eq!((v.offset_sec, v.offset_nsec), (90, 1));
        assert_eq!(v.to_bytes().len(), 40);
        assert_eq!(v.drift_bytes().len() as u64, CODE_AT - DRIFT_AT);
    }

    #[test]
    fn drift_is_fixed_point_and_never_takes_a_clock_back() {
        assert_eq!(rate_delta(1.0005), 2_147_484);
        let mut anchors = [0; CLOCK_IDS];
        anchors[1] = 1_000_000_000_000;
        let v = SkewValues::new(0, 7, 2).with_drift(rate_delta(1.0005), anchors);
        // No step at the anchor; 500 µs gained per second after it.
        assert_eq!(v.skewed_ns(1, anchors[1]), anchors[1]);
        let gained = v.skewed_ns(1, anchors[1] + 1_000_000_000) - anchors[1] - 1_000_000_000;
        assert!((gained - 500_000).abs() <= 1, "{gained}");
        // Half speed, read nanosecond by nanosecond: never backwards.
        let slow = SkewValues::new(-5, 7, 2).with_drift(rate_delta(0.5), anchors);
        let reads: Vec<i64> = (0..1000)
            .map(|t| slow.skewed_ns(1, anchors[1] + t))
            .collect();
        assert!(reads.windows(2).all(|w| w[1] >= w[0]));
        // A 100-day fault at double speed does not overflow.
        let fast = SkewValues::new(0, 7, 2).with_drift(rate_delta(2.0), anchors);
        let day100 = 100 * 86_400 * 1_000_000_000;
        assert_eq!(
            fast.skewed_ns(1, anchors[1] + day100),
            anchors[1] + 2 * day100
        );
    }

    #[test]
    fn jumps_round_trip() {
        let b = jmp_rel32(0x7fff_0000_1000, 0x7fff_0000_0000).unwrap();
        assert_eq!(jmp_target(0x7fff_0000_1000, &b), Some(0x7fff_0000_0000));
        assert!(jmp_rel32(0x1000, 0x7fff_0000_0000).is_err());
    }

    #[test]
    fn prologues_with_rip_relative_operands_relocate() {
        // __vdso_time of Linux 6.x: cmpl $0x7fffffff,-0x6ac6(%rip); lea ...; je; ...; ret
        let code = [
            0x83, 0x3d, 0x3a, 0x95, 0xff, 0xff, 0x7f, 0x48, 0x8d, 0x05, 0x2f, 0xa5, 0xff, 0xff,
            0x74, 0x06, 0x48, 0x2d, 0x00, 0x10, 0x00, 0x00, 0x48, 0x8b, 0x40, 0x28, 0xc3,
        ];
        let p = decode_prologue(ClockFunction::Time, &code, 0x7fff_0000_0ac0).unwrap();
        assert_eq!(p.len, 7);
        let cgt = Prologue {
            function: ClockFunction::ClockGettime,
            ..p.clone()
        };
        let page = 0x7fff_0000_2000;
        let img = assemble(page, SkewValues::new(1, 2, 1), &[cgt, p]).unwrap();
        assert_eq!(&img.bytes[..8], &MAGIC.to_le_bytes());
        assert_eq!(img.jumps.len(), 2);
        // The relocated compare still points at the same absolute address.
        let code_start = CODE_AT as usize;
        let relocated = Decoder::with_ip(
            64,
            &img.bytes[code_start..],
            page + code_start as u64,
            DecoderOptions::NONE,
        )
        .decode();
        assert_eq!(relocated.memory_displacement64(), 0x7fff_0000_0ac7 - 0x6ac6);
    }

    #[test]
    fn a_branch_into_the_hooked_bytes_is_refused() {
        // push rbp; mov rbp,rsp; jmp back to +1 (inside the first five bytes); ret
        let code = [0x55, 0x48, 0x89, 0xe5, 0x90, 0x90, 0xeb, 0xf9, 0xc3];
        assert!(decode_prologue(ClockFunction::ClockGettime, &code, 0x1000).is_err());
    }
}
