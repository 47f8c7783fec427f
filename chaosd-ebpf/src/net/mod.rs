//! Network faults: one rules map keyed by cgroup id, read by the cgroup_skb programs (packet
//! drops) and the cgroup sock_addr programs (connect errors), and the TC egress classifier
//! (corruption, duplication).

mod cgroup_skb;
mod departure;
mod peer;
mod proxy;
mod sock_addr;
mod tc;

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};
use chaosd_common::net::{MAX_CGROUP_LEVEL, MAX_NET_CGROUPS, NetRuleSet};

#[map]
static NET_RULES: HashMap<u64, NetRuleSet> = HashMap::with_max_entries(MAX_NET_CGROUPS, 0);

/// Bit L: some cgroup at level L has a rule set (`chaosd_common::net::NET_LEVELS_MAP`).
#[map]
static NET_LEVELS: Array<u32> = Array::with_max_entries(1, 0);

/// The deepest cgroup in an ancestry (level 1 = child of the root) that has a rule set, looked
/// up only at the levels [`NET_LEVELS`] names.
/// `ancestor(level)` returns 0 above the cgroup's own level. The daemon copies a targeted
/// cgroup's rules into the sets of targeted descendants, so the deepest set is complete.
/// None while the daemon's heartbeat is stale. The heartbeat (a clock read) is checked only
/// once a set is found: most packets belong to no targeted cgroup and skip it.
#[inline(always)]
fn deepest_rule_set(ancestor: impl Fn(i32) -> u64) -> Option<(u64, &'static NetRuleSet)> {
    let levels = *NET_LEVELS.get(0)?;
    let mut found = None;
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        if levels >> level == 0 {
            break;
        }
        if levels & (1 << level) == 0 {
            level += 1;
            continue;
        }
        let id = ancestor(level as i32);
        if id == 0 {
            break;
        }
        // SAFETY: map values are only read here; the daemon replaces whole values.
        if let Some(set) = unsafe { NET_RULES.get(&id) } {
            if !crate::heartbeat::daemon_alive() {
                return None;
            }
            found = Some((id, set));
        }
        level += 1;
    }
    found
}
