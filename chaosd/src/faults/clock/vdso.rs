//! A process's vDSO: where it is mapped, its clock functions (from its ELF dynamic symbols), and
//! a free page near it for the detour.

use std::{fs::File, io, os::unix::fs::FileExt as _};

use object::{Object as _, ObjectSymbol as _};

use super::ClockPatchError;

/// A process's memory through /proc/PID/mem: reads, and writes even to read-only text (the
/// kernel copies the page on write for that process only).
pub struct ProcMem(File);

impl ProcMem {
    /// `pid` may be "self".
    pub fn open(pid: &str) -> io::Result<ProcMem> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .map(ProcMem)
    }

    pub fn read(&self, addr: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.0.read_exact_at(&mut buf, addr)?;
        Ok(buf)
    }

    pub fn read_u64(&self, addr: u64) -> io::Result<u64> {
        let b = self.read(addr, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, addr)
    }
}

/// A mapping of /proc/PID/maps: [start, end) and its name ("[vdso]", a path, or empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub name: String,
}

pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let name = fields.nth(4).unwrap_or_default().to_string();
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                name,
            })
        })
        .collect()
}

/// One vDSO function: its address in the process and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VdsoFunction {
    pub addr: u64,
    pub size: u64,
}

/// The process's vDSO: its mapping, its bytes, and the clock functions it exports.
pub struct Vdso {
    pub start: u64,
    pub end: u64,
    pub image: Vec<u8>,
    pub clock_gettime: VdsoFunction,
    pub gettimeofday: Option<VdsoFunction>,
    pub time: Option<VdsoFunction>,
}

impl Vdso {
    /// Reads the vDSO of a process whose maps are `maps` through `mem`.
    pub fn read(mem: &ProcMem, maps: &[Mapping]) -> Result<Vdso, ClockPatchError> {
        let m = maps
            .iter()
            .find(|m| m.name == "[vdso]")
            .ok_or(ClockPatchError::NoVdso)?;
        let image = mem
            .read(m.start, (m.end - m.start) as usize)
            .map_err(|e| ClockPatchError::io("reading the vDSO", e))?;
        Self::parse(m.start, m.end, image)
    }

    /// Parses the vDSO image mapped at `start`.
    pub fn parse(start: u64, end: u64, image: Vec<u8>) -> Result<Vdso, ClockPatchError> {
        let file = match object::FileKind::parse(&*image) {
            Ok(object::FileKind::Elf64) => {
                object::read::elf::ElfFile64::<object::Endianness>::parse(&*image)
                    .map_err(|e| ClockPatchError::BadVdso(e.to_string()))?
            }
            Ok(kind) => return Err(ClockPatchError::ForeignVdso(format!("{kind:?}"))),
            Err(e) => return Err(ClockPatchError::BadVdso(e.to_string())),
        };
        if file.architecture() != object::Architecture::X86_64 {
            return Err(ClockPatchError::ForeignVdso(format!(
                "{:?}",
                file.architecture()
            )));
        }
        let find = |name: &str| {
            file.dynamic_symbols()
                .find(|s| s.name() == Ok(name) && s.size() > 0)
                .map(|s| VdsoFunction {
                    addr: start + s.address(),
                    size: s.size(),
                })
                .filter(|f| f.addr + f.size <= end)
        };
        let clock_gettime = find("__vdso_clock_gettime")
            .ok_or_else(|| ClockPatchError::BadVdso("it exports no __vdso_clock_gettime".into()))?;
        let gettimeofday = find("__vdso_gettimeofday");
        let time = find("__vdso_time");
        drop(file);
        Ok(Vdso {
            start,
            end,
            image,
            clock_gettime,
            gettimeofday,
            time,
        })
    }

    /// The bytes of `f`.
    pub fn code(&self, f: VdsoFunction) -> &[u8] {
        let from = (f.addr - self.start) as usize;
        &self.image[from..from + f.size as usize]
    }
}

/// How far from the vDSO the detour page may be: every relocated RIP-relative operand (they
/// point into the vDSO and the vvar pages just below it) and the hook's `jmp rel32` must reach.
const REACH: u64 = 1 << 30;
/// Room kept free below the stack so that it can still grow there.
const STACK_GROWTH: u64 = 256 << 20;
pub const PAGE: u64 = 4096;

/// A free page within [`REACH`] of the vDSO: above it first (nothing grows there on x86_64),
/// else below, never in the stack's growth room.
pub fn free_page_near_vdso(maps: &[Mapping]) -> Option<u64> {
    let vdso = maps.iter().find(|m| m.name == "[vdso]")?;
    let mut taken: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).collect();
    if let Some(stack) = maps.iter().find(|m| m.name == "[stack]") {
        taken.push((stack.start.saturating_sub(STACK_GROWTH), stack.start));
    }
    let free = |page: u64| {
        page >= 0x10000
            && page + PAGE <= 0x7fff_ffff_f000
            && taken.iter().all(|&(s, e)| page + PAGE <= s || page >= e)
    };
    // Candidates: right after each mapping's end and right before each start, in reach.
    let mut candidates: Vec<u64> = taken
        .iter()
        .flat_map(|&(s, e)| [e, s.saturating_sub(PAGE)])
        .filter(|&p| p.abs_diff(vdso.start) < REACH && p.abs_diff(vdso.end) < REACH)
        .collect();
    candidates.sort_by_key(|&p| (p < vdso.start, p.abs_diff(vdso.start)));
    candidates.into_iter().find(|&p| free(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0001000 r-xp 00000000 08:01 1 /usr/bin/x
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd000fb000-7ffd000ff000 r--p 00000000 00:00 0                          [vvar]
7ffd000ff000-7ffd00101000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn maps_parse_with_names() {
        let m = parse_maps(MAPS);
        assert_eq!(m.len(), 4);
        assert_eq!(m[3].name, "[vdso]");
        assert_eq!(m[3].start, 0x7ffd000ff000);
        assert_eq!(m[0].name, "/usr/bin/x");
    }

    #[test]
    fn free_page_is_above_the_vdso_when_possible() {
        let m = parse_maps(MAPS);
        assert_eq!(free_page_near_vdso(&m), Some(0x7ffd00101000));
        // Something right above: the next free slot above it.
        let more = format!("{MAPS}7ffd00101000-7ffd00102000 r-xp 00000000 00:00 0\n");
        assert_eq!(
            free_page_near_vdso(&parse_maps(&more)),
            Some(0x7ffd00102000)
        );
    }

    #[test]
    fn free_page_below_skips_the_stack_growth_room() {
        let top = "\
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd000fb000-7ffd000ff000 r--p 00000000 00:00 0                          [vvar]
7fffffffd000-7ffffffff000 r-xp 00000000 00:00 0                          [vdso]
";
        let maps = parse_maps(top);
        let page = free_page_near_vdso(&maps).unwrap();
        assert!(page >= 0x7ffd00021000 || page + PAGE <= 0x7ffd00000000 - STACK_GROWTH);
        assert!(page.abs_diff(0x7fffffffd000) < REACH);
    }

    #[test]
    fn the_hosts_own_vdso_has_clock_functions() {
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let mem = ProcMem::open("self").unwrap();
        let vdso = Vdso::read(&mem, &maps);
        if cfg!(target_arch = "x86_64") {
            let v = vdso.unwrap();
            assert!(v.clock_gettime.size > 5);
            assert!(v.gettimeofday.is_some() && v.time.is_some());
        } else {
            // Other architectures have a vDSO of their own kind.
            assert!(vdso.is_err());
        }
    }
}
