//! How the daemon's freed heap goes back to the kernel.
//!
//! glibc raises its mmap threshold to the size of the largest mmap'd block freed so far. The
//! kernel's BTF (several MiB, read at start) and the verifier's logs then push later large
//! buffers into the heap arenas, whose pages stay resident after `free`: a release daemon idled
//! at 41 MiB RSS, of which under 1 MiB was in use. A fixed threshold keeps large buffers in
//! their own mappings, returned on free, and a trim after the big one-off allocations hands
//! back the small-block pages left behind.

/// Blocks from this size on get their own mapping.
const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Fixes glibc's mmap threshold; call before the first thread starts.
pub fn return_large_blocks_on_free() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the free pages of every heap arena to the kernel.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory no allocation holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
