//! Rules per targeted cgroup, the way the kernel programs read them.
//!
//! Programs walk a task's or packet's cgroup ancestry and use the *deepest* cgroup that has a
//! rule set, so each targeted cgroup's set must also hold the rules of faults on its targeted
//! ancestors. Fault kinds keep their active faults as [`TargetedRule`]s and rebuild their map
//! from them with [`RuleMap::sync`] after every change.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aya::{
    Pod,
    maps::{MapData, MapError},
};

use crate::error::FaultError;

/// One active fault's kernel rule and the cgroups (id, path) it targets.
pub struct TargetedRule<R> {
    pub rule: R,
    pub targets: Vec<(u64, String)>,
}

/// For each targeted cgroup, the rules (in fault order) of every fault that targets it or one
/// of its ancestors, packed into `N` slots; `what` names the kind in the capacity error.
///
/// Each targeted cgroup looks its own path and its ancestors' up in an index of the faults by
/// target, so the cost grows with cgroups × depth, not cgroups × faults: with a thousand
/// faults on a thousand cgroups, an inject stays as cheap as the first.
pub fn inherited_sets<'a, R, const N: usize>(
    faults: impl Iterator<Item = &'a TargetedRule<R>> + Clone,
    what: &str,
) -> Result<BTreeMap<u64, [R; N]>, FaultError>
where
    R: Copy + Default + 'a,
{
    inherited_sets_of(faults, None, what)
}

/// [`inherited_sets`] for the targeted cgroups in `only` (all with `None`).
pub fn inherited_sets_of<'a, R, const N: usize>(
    faults: impl Iterator<Item = &'a TargetedRule<R>> + Clone,
    only: Option<&BTreeSet<u64>>,
    what: &str,
) -> Result<BTreeMap<u64, [R; N]>, FaultError>
where
    R: Copy + Default + 'a,
{
    let index = TargetIndex::new(faults.clone());
    let rules: Vec<R> = faults.map(|f| f.rule).collect();
    let mut sets = BTreeMap::new();
    let wanted = |id: &u64| only.is_none_or(|o| o.contains(id));
    for (id, path) in index.targeted.iter().filter(|(id, _)| wanted(id)) {
        let mut set = [R::default(); N];
        for (n, fault) in index.covering(path).into_iter().enumerate() {
            *set.get_mut(n).ok_or_else(|| FaultError::Capacity {
                what: format!("cgroup {path} would carry more than {N} {what} faults"),
            })? = rules[fault];
        }
        sets.insert(*id, set);
    }
    Ok(sets)
}

/// The cgroups whose rule sets a fault with targets `changed` (added or just removed) can
/// alter: those targets and every cgroup `faults` target at or below them.
pub fn affected_by<'a, R: 'a>(
    faults: impl Iterator<Item = &'a TargetedRule<R>>,
    changed: &[(u64, String)],
) -> BTreeSet<u64> {
    let mut affected: BTreeSet<u64> = changed.iter().map(|(id, _)| *id).collect();
    for (id, path) in faults.flat_map(|f| f.targets.iter()) {
        if changed.iter().any(|(_, c)| covers(c, path)) {
            affected.insert(*id);
        }
    }
    affected
}

/// `candidate` is `of` or one of its ancestors: [`crate::host::cgroup::is_same_or_ancestor`]
/// without its allocation (this runs for every target of every fault at each inject).
fn covers(candidate: &str, of: &str) -> bool {
    let c = candidate.trim_end_matches('/');
    of == candidate || (of.len() > c.len() && of.starts_with(c) && of.as_bytes()[c.len()] == b'/')
}

/// The faults (by position) of each target path, and every targeted cgroup.
struct TargetIndex<'a> {
    /// A target's path exactly as written.
    exact: HashMap<&'a str, Vec<usize>>,
    /// A target's path without trailing slashes ("" for the root): it covers what lies below.
    below: HashMap<&'a str, Vec<usize>>,
    targeted: BTreeMap<u64, &'a str>,
}

impl<'a> TargetIndex<'a> {
    fn new<R: 'a>(faults: impl Iterator<Item = &'a TargetedRule<R>>) -> Self {
        let mut index = TargetIndex {
            exact: HashMap::new(),
            below: HashMap::new(),
            targeted: BTreeMap::new(),
        };
        for (n, f) in faults.enumerate() {
            for (id, path) in &f.targets {
                index.exact.entry(path.as_str()).or_default().push(n);
                let trimmed = path.trim_end_matches('/');
                index.below.entry(trimmed).or_default().push(n);
                index.targeted.insert(*id, path.as_str());
            }
        }
        index
    }

    /// The faults targeting `path` or an ancestor, in fault order, each once: what
    /// [`crate::host::cgroup::is_same_or_ancestor`] accepts.
    fn covering(&self, path: &str) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        found.extend(self.exact.get(path).into_iter().flatten());
        for (i, _) in path.match_indices('/') {
            found.extend(self.below.get(&path[..i]).into_iter().flatten());
        }
        found
    }
}

/// A BPF hash map from cgroup id to rule set, and what it holds now.
pub struct RuleMap<V: Pod + PartialEq> {
    map: aya::maps::HashMap<MapData, u64, V>,
    written: BTreeMap<u64, V>,
    what: &'static str,
}

impl<V: Pod + PartialEq> RuleMap<V> {
    pub fn new(map: aya::maps::HashMap<MapData, u64, V>, what: &'static str) -> Self {
        RuleMap {
            map,
            written: BTreeMap::new(),
            what,
        }
    }

    /// Makes the entries of `ids` what `desired` says (an id missing from it is removed);
    /// other entries stay. With [`affected_by`] and [`inherited_sets_of`], an inject writes
    /// its own targets' sets and those below, whatever else is in force.
    pub fn sync_only(
        &mut self,
        ids: &BTreeSet<u64>,
        desired: BTreeMap<u64, V>,
    ) -> Result<(), FaultError> {
        for id in ids {
            match desired.get(id) {
                Some(set) if self.written.get(id) == Some(set) => {}
                Some(set) => {
                    self.map
                        .insert(id, set, 0)
                        .map_err(|e| FaultError::kernel(self.what, e))?;
                    self.written.insert(*id, *set);
                }
                None if self.written.contains_key(id) => {
                    match self.map.remove(id) {
                        Ok(()) | Err(MapError::KeyNotFound) => {}
                        Err(e) => return Err(FaultError::kernel(self.what, e)),
                    }
                    self.written.remove(id);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Makes the map hold exactly `desired` (computed in full before this writes anything),
    /// writing only the entries that change: an inject touches the sets of its own targets.
    pub fn sync(&mut self, desired: BTreeMap<u64, V>) -> Result<(), FaultError> {
        for (id, set) in &desired {
            if self.written.get(id) == Some(set) {
                continue;
            }
            self.map
                .insert(id, set, 0)
                .map_err(|e| FaultError::kernel(self.what, e))?;
            self.written.insert(*id, *set);
        }
        let stale: Vec<u64> = self
            .written
            .keys()
            .filter(|id| !desired.contains_key(id))
            .copied()
            .collect();
        for id in stale {
            match self.map.remove(&id) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(FaultError::kernel(self.what, e)),
            }
            self.written.remove(&id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::cgroup::is_same_or_ancestor;

    /// The definition: every fault whose target is the cgroup or an ancestor, in order.
    fn naive<const N: usize>(faults: &[TargetedRule<u32>]) -> BTreeMap<u64, [u32; N]> {
        let targeted: BTreeMap<u64, &str> = faults
            .iter()
            .flat_map(|f| f.targets.iter().map(|(id, p)| (*id, p.as_str())))
            .collect();
        targeted
            .into_iter()
            .map(|(id, path)| {
                let mut set = [0; N];
                let covering = faults
                    .iter()
                    .filter(|f| f.targets.iter().any(|(_, t)| is_same_or_ancestor(t, path)));
                for (n, f) in covering.enumerate() {
                    set[n] = f.rule;
                }
                (id, set)
            })
            .collect()
    }

    fn fault(rule: u32, targets: &[(u64, &str)]) -> TargetedRule<u32> {
        TargetedRule {
            rule,
            targets: targets
                .iter()
                .map(|(id, p)| (*id, (*p).to_string()))
                .collect(),
        }
    }

    #[test]
    fn sets_inherit_from_ancestors_in_fault_order_as_the_definition_says() {
        let faults = [
            fault(1, &[(10, "/a/b")]),
            fault(2, &[(1, "/")]),
            fault(3, &[(11, "/a"), (12, "/a/bc")]),
            fault(4, &[(10, "/a/b"), (13, "/a/b/c/d")]),
            fault(5, &[(14, "/ab")]),
            fault(6, &[(15, "/a/")]),
        ];
        let sets = inherited_sets::<_, 8>(faults.iter(), "test").unwrap();
        assert_eq!(sets, naive::<8>(&faults));
        assert_eq!(
            sets[&13][..4],
            [1, 2, 3, 4],
            "/a/b/c/d gets /, /a, /a/b's rules"
        );
        assert_eq!(sets[&14][..2], [2, 5], "/ab is not below /a");
    }

    #[test]
    fn a_change_affects_its_targets_and_what_lies_below_them_only() {
        let faults = [
            fault(1, &[(10, "/a/b")]),
            fault(2, &[(11, "/a/b/c"), (12, "/ab")]),
            fault(3, &[(13, "/x")]),
        ];
        let changed = vec![(20, "/a".to_string())];
        let affected = affected_by(faults.iter(), &changed);
        assert_eq!(affected, BTreeSet::from([10, 11, 20]));
        let all = inherited_sets::<_, 4>(faults.iter(), "test").unwrap();
        let some = inherited_sets_of::<_, 4>(faults.iter(), Some(&affected), "test").unwrap();
        assert_eq!(some.keys().copied().collect::<Vec<_>>(), [10, 11]);
        assert!(some.iter().all(|(id, set)| all[id] == *set));
        for (c, of, want) in [
            ("/", "/a", true),
            ("/a", "/ab", false),
            ("/a/", "/a/b", true),
        ] {
            assert_eq!(covers(c, of), is_same_or_ancestor(c, of), "{c} {of}");
            assert_eq!(covers(c, of), want, "{c} {of}");
        }
    }

    #[test]
    fn a_thousand_faults_give_the_same_sets_and_too_many_on_one_cgroup_is_refused() {
        let paths: Vec<String> = (0..1000)
            .map(|i| format!("/svc{}/pod{}", i % 37, i))
            .collect();
        let mut faults: Vec<TargetedRule<u32>> = (0..1000)
            .map(|i| fault(i as u32 + 1, &[(i as u64 + 100, paths[i].as_str())]))
            .collect();
        faults.push(fault(5000, &[(7, "/svc3")]));
        let sets = inherited_sets::<_, 4>(faults.iter(), "test").unwrap();
        assert_eq!(sets, naive::<4>(&faults));
        let crowded: Vec<TargetedRule<u32>> = (0..5).map(|i| fault(i, &[(1, "/x")])).collect();
        let e = inherited_sets::<_, 4>(crowded.iter(), "test").unwrap_err();
        assert!(e.to_string().contains("more than 4 test faults"), "{e}");
    }
}
