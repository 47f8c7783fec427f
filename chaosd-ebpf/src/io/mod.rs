//! File I/O errors: rules per cgroup, applied by BPF LSM programs on the file and inode hooks.

mod lsm;
