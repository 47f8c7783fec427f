//! Rules per targeted cgroup, the way the kernel programs read them.
//!
//! Programs walk a task's or packet's cgroup ancestry and use the *deepest* cgroup that has a
//! rule set, so each targeted cgroup's set must also hold the rules of faults on its targeted
//! ancestors. Fault kinds keep their active faults as [`TargetedRule`]s and rebuild their map
//! from them with [`RuleMap::sync`] after every change; the network kinds, which may have a
//! thousand faults in force, keep a [`TargetIndex`] and rewrite only the sets a change
//! touches ([`RuleMap::sync_only`]).

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
pub fn inherited_sets<'a, R, const N: usize>(
    faults: impl Iterator<Item = &'a TargetedRule<R>>,
    what: &str,
) -> Result<BTreeMap<u64, [R; N]>, FaultError>
where
    R: Copy + Default + 'a,
{
    let mut index = TargetIndex::default();
    let mut rules = Vec::new();
    for (n, f) in faults.enumerate() {
        index.insert(n, &f.targets);
        rules.push(f.rule);
    }
    index.sets(index.targeted(), |n| rules[n], what)
}

/// Which faults (by a key in fault order) target which cgroups, kept up to date fault by
/// fault: a change looks up only the cgroups it touches, so an inject costs the same with a
/// thousand faults in force as with none (cgroups × depth, never cgroups × faults).
pub struct TargetIndex<K> {
    /// Faults by a target path exactly as written.
    exact: HashMap<String, BTreeSet<K>>,
    /// Faults by a target path without trailing slashes ("" for the root): it covers what
    /// lies below.
    below: HashMap<String, BTreeSet<K>>,
    /// Each targeted cgroup (path, id), with how many fault targets name it; sorted by path,
    /// so the cgroups below a path are one range.
    targets: BTreeMap<(String, u64), usize>,
    /// Fault targets by depth (`/a/b` is 2).
    depths: BTreeMap<usize, usize>,
}

impl<K> Default for TargetIndex<K> {
    fn default() -> Self {
        TargetIndex {
            exact: HashMap::new(),
            below: HashMap::new(),
            targets: BTreeMap::new(),
            depths: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> TargetIndex<K> {
    pub fn insert(&mut self, key: K, targets: &[(u64, String)]) {
        for (id, path) in targets {
            self.exact.entry(path.clone()).or_default().insert(key);
            let trimmed = path.trim_end_matches('/').to_string();
            self.below.entry(trimmed).or_default().insert(key);
            *self.targets.entry((path.clone(), *id)).or_default() += 1;
            *self.depths.entry(depth(path)).or_default() += 1;
        }
    }

    /// Undoes [`TargetIndex::insert`] of `key` with the same `targets`.
    pub fn remove(&mut self, key: K, targets: &[(u64, String)]) {
        for (id, path) in targets {
            forget(&mut self.exact, path, key);
            forget(&mut self.below, path.trim_end_matches('/'), key);
            decrement(&mut self.targets, &(path.clone(), *id));
            decrement(&mut self.depths, &depth(path));
        }
    }

    /// Every targeted cgroup (id, path).
    pub fn targeted(&self) -> impl Iterator<Item = (u64, &str)> + '_ {
        self.targets.keys().map(|(path, id)| (*id, path.as_str()))
    }

    /// The depths that hold at least one target.
    pub fn depths(&self) -> impl Iterator<Item = usize> + '_ {
        self.depths.keys().copied()
    }

    /// The cgroups whose rule sets a fault with targets `changed` (added or just removed) can
    /// alter: those targets and every targeted cgroup at or below them, by id.
    pub fn affected_by(&self, changed: &[(u64, String)]) -> BTreeMap<u64, String> {
        let mut affected: BTreeMap<u64, String> = changed.iter().cloned().collect();
        for (_, c) in changed {
            let exact = (c.clone(), 0)..=(c.clone(), u64::MAX);
            affected.extend(
                self.targets
                    .range(exact)
                    .map(|((p, id), _)| (*id, p.clone())),
            );
            let prefix = format!("{}/", c.trim_end_matches('/'));
            let below = self
                .targets
                .range((prefix.clone(), 0)..)
                .take_while(|((p, _), _)| p.starts_with(&prefix));
            affected.extend(below.map(|((p, id), _)| (*id, p.clone())));
        }
        affected
    }

    /// The sets (see [`inherited_sets`]) of those cgroups in `of` that some fault targets;
    /// `rule` gives a fault's rule by its key.
    pub fn sets<'p, R: Copy + Default, const N: usize>(
        &self,
        of: impl Iterator<Item = (u64, &'p str)>,
        rule: impl Fn(K) -> R,
        what: &str,
    ) -> Result<BTreeMap<u64, [R; N]>, FaultError> {
        let mut sets = BTreeMap::new();
        for (id, path) in of {
            if !self.targets.contains_key(&(path.to_string(), id)) {
                continue;
            }
            let mut set = [R::default(); N];
            for (n, key) in self.covering(path).into_iter().enumerate() {
                *set.get_mut(n).ok_or_else(|| FaultError::Capacity {
                    what: format!("cgroup {path} would carry more than {N} {what} faults"),
                })? = rule(key);
            }
            sets.insert(id, set);
        }
        Ok(sets)
    }

    /// The faults targeting `path` or an ancestor, in fault order, each once: what
    /// [`crate::host::cgroup::is_same_or_ancestor`] accepts.
    fn covering(&self, path: &str) -> BTreeSet<K> {
        let mut found = BTreeSet::new();
        found.extend(self.exact.get(path).into_iter().flatten());
        for (i, _) in path.match_indices('/') {
            found.extend(self.below.get(&path[..i]).into_iter().flatten());
        }
        found
    }
}

/// `/a/b` is 2, the root 0.
fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

fn forget<K: Ord>(index: &mut HashMap<String, BTreeSet<K>>, path: &str, key: K) {
    if let Some(keys) = index.get_mut(path) {
        keys.remove(&key);
        if keys.is_empty() {
            index.remove(path);
        }
    }
}

fn decrement<T: Ord>(counts: &mut BTreeMap<T, usize>, key: &T) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
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
    /// other entries stay. With [`TargetIndex::affected_by`] and [`TargetIndex::sets`], an
    /// inject writes its own targets' sets and those below, whatever else is in force.
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

    /// An index of `faults` keyed by position, as a fault kind keeps one.
    fn indexed(faults: &[TargetedRule<u32>]) -> TargetIndex<usize> {
        let mut index = TargetIndex::default();
        for (n, f) in faults.iter().enumerate() {
            index.insert(n, &f.targets);
        }
        index
    }

    #[test]
    fn a_change_affects_its_targets_and_what_lies_below_them_only() {
        let faults = [
            fault(1, &[(10, "/a/b")]),
            fault(2, &[(11, "/a/b/c"), (12, "/ab")]),
            fault(3, &[(13, "/x")]),
            fault(4, &[(14, "/a/")]),
        ];
        let index = indexed(&faults);
        let changed = vec![(20, "/a".to_string())];
        let affected = index.affected_by(&changed);
        assert_eq!(
            affected.keys().copied().collect::<Vec<_>>(),
            [10, 11, 14, 20]
        );
        let all = inherited_sets::<_, 4>(faults.iter(), "test").unwrap();
        let some = index
            .sets::<_, 4>(
                affected.iter().map(|(id, p)| (*id, p.as_str())),
                |n| faults[n].rule,
                "test",
            )
            .unwrap();
        assert_eq!(some.keys().copied().collect::<Vec<_>>(), [10, 11, 14]);
        assert!(some.iter().all(|(id, set)| all[id] == *set));
        let root = index.affected_by(&[(1, "/".to_string())]);
        assert_eq!(root.len(), 6, "the root covers every target: {root:?}");
        let exact = index.affected_by(&[(14, "/a/".to_string())]);
        assert_eq!(
            exact.keys().copied().collect::<Vec<_>>(),
            [10, 11, 14],
            "/a/ covers /a/b"
        );
    }

    /// Faults added and removed one by one (as injects and recovers come) leave the index
    /// with the sets, depths and targets of the faults still in force, computed afresh.
    #[test]
    fn an_index_kept_change_by_change_agrees_with_one_built_afresh() {
        let paths = ["/", "/a", "/a/b", "/a/b/c", "/ab", "/a/bc", "/x/y/z", "/a/"];
        let mut live: BTreeMap<usize, TargetedRule<u32>> = BTreeMap::new();
        let mut index = TargetIndex::default();
        let mut seed = 7u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for step in 0..400 {
            if live.len() > 16 || live.len() > 8 && next(2) == 0 {
                let key = *live.keys().nth(next(live.len())).unwrap();
                let gone = live.remove(&key).unwrap();
                index.remove(key, &gone.targets);
            } else {
                let targets: Vec<(u64, &str)> = (0..1 + next(2))
                    .map(|_| {
                        let i = next(paths.len());
                        (i as u64 + 1, paths[i])
                    })
                    .collect();
                let f = fault(step as u32, &targets);
                index.insert(step, &f.targets);
                live.insert(step, f);
            }
            let fresh: Vec<TargetedRule<u32>> = live
                .values()
                .map(|f| TargetedRule {
                    rule: f.rule,
                    targets: f.targets.clone(),
                })
                .collect();
            let want = naive::<64>(&fresh);
            let got = index
                .sets::<_, 64>(index.targeted(), |k| live[&k].rule, "test")
                .unwrap();
            assert_eq!(got, want, "after step {step}");
            let depths: BTreeSet<usize> = fresh
                .iter()
                .flat_map(|f| f.targets.iter().map(|(_, p)| depth(p)))
                .collect();
            assert_eq!(index.depths().collect::<BTreeSet<_>>(), depths);
        }
        for (key, f) in std::mem::take(&mut live) {
            index.remove(key, &f.targets);
        }
        assert!(index.exact.is_empty() && index.below.is_empty());
        assert!(index.targets.is_empty() && index.depths.is_empty());
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
