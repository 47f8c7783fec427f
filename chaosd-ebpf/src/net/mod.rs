//! Network faults: rules per cgroup, applied by cgroup_skb programs on the cgroup2 root.

mod cgroup_skb;
