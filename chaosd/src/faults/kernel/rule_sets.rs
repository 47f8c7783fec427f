//! Rules per targeted cgroup, the way the kernel programs read them.
//!
//! Programs walk a task's or packet's cgroup ancestry and use the *deepest* cgroup that has a
//! rule set, so each targeted cgroup's set must also hold the rules of faults on its targeted
//! ancestors. Fault kinds keep their active faults as [`TargetedRule`]s and rebuild their map
//! from them with [`RuleMap::sync`] after every change.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    Pod,
    maps::{HashMap, MapData, MapError},
};

use crate::{error::FaultError, host::cgroup::is_same_or_ancestor};

/// One active fault's kernel rule and the cgroups (id, path) it targets.
pub struct TargetedRule<R> {
    pub rule: R,
    pub targets: Vec<(u64, String)>,
}

/// For each targeted cgroup, the rules (in fault order) of every fault that targets it or one
/// of its ancestors, packed into `N` slots; `what` names the kind in the capacity error.
pub fn inherited_sets<'a, R, const N: usize>(
    faults: impl Iterator<Item = &'a TargetedRule<R>> + Clone,
    what: &str,
) -> Result<BTreeMap<u64, [R; N]>, FaultError>
where
    R: Copy + Default + 'a,
{
    let targeted: BTreeMap<u64, &str> = faults
        .clone()
        .flat_map(|f| f.targets.iter().map(|(id, p)| (*id, p.as_str())))
        .collect();
    let mut sets = BTreeMap::new();
    for (id, path) in targeted {
        let mut set = [R::default(); N];
        let inherited = faults
            .clone()
            .filter(|f| f.targets.iter().any(|(_, t)| is_same_or_ancestor(t, path)));
        for (n, f) in inherited.enumerate() {
            *set.get_mut(n).ok_or_else(|| FaultError::Capacity {
                what: format!("cgroup {path} would carry more than {N} {what} faults"),
            })? = f.rule;
        }
        sets.insert(id, set);
    }
    Ok(sets)
}

/// A BPF hash map from cgroup id to rule set, and which ids it holds now.
pub struct RuleMap<V: Pod> {
    map: HashMap<MapData, u64, V>,
    written: BTreeSet<u64>,
    what: &'static str,
}

impl<V: Pod> RuleMap<V> {
    pub fn new(map: HashMap<MapData, u64, V>, what: &'static str) -> Self {
        RuleMap {
            map,
            written: BTreeSet::new(),
            what,
        }
    }

    /// Makes the map hold exactly `desired` (computed in full before this writes anything).
    pub fn sync(&mut self, desired: BTreeMap<u64, V>) -> Result<(), FaultError> {
        for (id, set) in &desired {
            self.map
                .insert(id, set, 0)
                .map_err(|e| FaultError::kernel(self.what, e))?;
        }
        for id in self.written.iter().filter(|id| !desired.contains_key(id)) {
            match self.map.remove(id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(FaultError::kernel(self.what, e)),
            }
        }
        self.written = desired.into_keys().collect();
        Ok(())
    }
}
