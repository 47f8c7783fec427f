//! What a running process holds, read from outside: open descriptors, resident memory, child
//! processes and the entries of the eBPF maps it has open. Load tests compare these before and
//! after many faults to find leaks.

use std::{collections::BTreeMap, fmt, os::fd::AsFd as _};

use aya::maps::{MapInfo, MapType};

/// A snapshot of one process's resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Footprint {
    pub fds: usize,
    pub rss_bytes: u64,
    /// Live children (stress workers and other helpers the process started).
    pub children: usize,
    /// Entries of each hash-like (hash, LRU, per-CPU hash) map the process has open, by the
    /// map's kernel name (cut at 15 bytes). Arrays and ring buffers have a fixed size, so they
    /// are left out.
    pub map_entries: BTreeMap<String, usize>,
}

impl Footprint {
    pub fn of(pid: u32) -> Footprint {
        Footprint {
            fds: open_fds(pid),
            rss_bytes: rss_bytes(pid),
            children: children(pid),
            map_entries: map_entries(pid),
        }
    }
}

impl fmt::Display for Footprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fds {}, RSS {:.1} MiB, children {}, map entries {:?}",
            self.fds,
            self.rss_bytes as f64 / f64::from(1 << 20),
            self.children,
            self.map_entries
        )
    }
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// VmRSS of `pid` in bytes (0 if it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Children of any of `pid`'s threads (`/proc/PID/task/TID/children`).
pub fn children(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

/// The ids of the eBPF maps `pid` holds descriptors of (`map_id:` in their fdinfo).
pub fn map_ids(pid: u32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = fds
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Entries of each hash-like map `pid` has open (see [`Footprint::map_entries`]).
pub fn map_entries(pid: u32) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for id in map_ids(pid) {
        // A map closed since its fdinfo was read is simply not counted.
        let Ok(info) = MapInfo::from_id(id) else {
            continue;
        };
        let hash_like = matches!(
            info.map_type(),
            Ok(MapType::Hash | MapType::LruHash | MapType::PerCpuHash | MapType::LruPerCpuHash)
        );
        if !hash_like {
            continue;
        }
        let name = info
            .name_as_str()
            .map_or_else(|| format!("map#{id}"), str::to_string);
        let entries = count_keys(&info).unwrap_or_else(|e| panic!("counting keys of {name}: {e}"));
        *out.entry(name).or_default() += entries;
    }
    out
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// `union bpf_attr` as `BPF_MAP_GET_NEXT_KEY` reads it.
#[repr(C)]
#[derive(Default)]
struct NextKeyAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// Walks the map's keys with `BPF_MAP_GET_NEXT_KEY` (whatever their type) and counts them.
fn count_keys(info: &MapInfo) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let fd = info.fd().map_err(std::io::Error::other)?;
    let size = info.key_size() as usize;
    let (mut key, mut next) = (vec![0u8; size], vec![0u8; size]);
    let mut count = 0;
    loop {
        let mut attr = NextKeyAttr {
            map_fd: fd.as_fd().as_raw_fd() as u32,
            // No key yet: the kernel starts from the first one.
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            ..NextKeyAttr::default()
        };
        // SAFETY: both buffers hold key_size bytes and outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &mut attr as *mut NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) => Ok(count),
                _ => Err(e),
            };
        }
        count += 1;
        // A key deleted under the walk restarts it from the first key: stop at the capacity.
        if count >= info.max_entries() as usize {
            return Ok(count);
        }
        std::mem::swap(&mut key, &mut next);
    }
}
