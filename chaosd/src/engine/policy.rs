//! The blast-radius policy (`[policy]` in the config): cgroups no fault may target, whole
//! slices if the operator says so, and how many faults may be active at once. The hard rules
//! (the cgroup2 root, chaosd's own cgroup) live in [`crate::host::cgroup::resolve`].

use crate::{
    config::PolicyConfig,
    error::{FaultError, TargetError},
    host::cgroup::{HostPart, OWN_CGROUP_PREFIXES, is_same_or_ancestor},
};

/// The cgroups a host-wide target must never take whole: the daemon's own and PID 1's.
#[derive(Clone, Debug)]
pub struct Keep {
    pub own: String,
    pub init: Option<String>,
}

impl PolicyConfig {
    /// Refuses `cgroup` (a path under the cgroup2 mount) if it is, holds or lies inside a
    /// protected cgroup, holds PID 1, or is a slice while `refuse_slices` is set.
    pub fn check_target(&self, cgroup: &str) -> Result<(), TargetError> {
        if let Ok(init) = crate::host::cgroup::cgroup_of_pid(1)
            && is_same_or_ancestor(cgroup, &init)
        {
            return Err(TargetError::ContainsInit {
                path: cgroup.to_string(),
            });
        }
        for protected in &self.protected_cgroups {
            let protected = normalise(protected);
            if is_same_or_ancestor(cgroup, &protected) || is_same_or_ancestor(&protected, cgroup) {
                return Err(TargetError::Protected {
                    path: cgroup.to_string(),
                    protected,
                });
            }
        }
        let last = cgroup.rsplit('/').next().unwrap_or_default();
        if self.refuse_slices && last.ends_with(".slice") {
            return Err(TargetError::Slice {
                path: cgroup.to_string(),
            });
        }
        Ok(())
    }

    /// How a host-wide target treats `cgroup`: excluded (protected, `host_exclude`, chaosd's
    /// own cgroups, PID 1's, and whatever lies inside those), split into its children (it
    /// holds one of them; with `refuse_slices`, a slice), or taken whole.
    pub fn host_part(&self, cgroup: &str, keep: &Keep) -> HostPart {
        let last = cgroup.rsplit('/').next().unwrap_or_default();
        // A daemon or init in the root keeps nothing apart: the root is never a target.
        let inside = |outer: &str| outer != "/" && is_same_or_ancestor(outer, cgroup);
        let holds = |inner: &str| inner != "/" && is_same_or_ancestor(cgroup, inner);
        let protected: Vec<String> = self
            .protected_cgroups
            .iter()
            .map(|p| normalise(p))
            .collect();
        let excluded_paths: Vec<String> = self
            .host_exclude
            .iter()
            .filter(|e| e.contains('/'))
            .map(|e| normalise(e))
            .collect();
        let by_name = self
            .host_exclude
            .iter()
            .any(|e| !e.contains('/') && e == last);
        let own_kind = OWN_CGROUP_PREFIXES.iter().any(|p| last.starts_with(p));
        if by_name
            || own_kind
            || inside(&keep.own)
            || keep.init.as_deref().is_some_and(inside)
            || protected.iter().chain(&excluded_paths).any(|p| inside(p))
        {
            return HostPart::Excluded;
        }
        if holds(&keep.own)
            || keep.init.as_deref().is_some_and(holds)
            || protected.iter().chain(&excluded_paths).any(|p| holds(p))
            || (self.refuse_slices && last.ends_with(".slice"))
        {
            return HostPart::Split;
        }
        HostPart::Whole
    }

    /// Refuses one more fault when `active` faults already run.
    pub fn check_room(&self, active: usize) -> Result<(), FaultError> {
        if active < self.max_concurrent_faults {
            return Ok(());
        }
        Err(FaultError::Capacity {
            what: format!(
                "{active} faults are active, the most the daemon's config allows (policy.max_concurrent_faults = {})",
                self.max_concurrent_faults
            ),
        })
    }
}

/// "init.scope/" and "/init.scope" name the same cgroup.
fn normalise(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(protected: &[&str], refuse_slices: bool) -> PolicyConfig {
        PolicyConfig {
            protected_cgroups: protected.iter().map(|s| s.to_string()).collect(),
            refuse_slices,
            max_concurrent_faults: 2,
            host_exclude: vec!["sshd.service".into(), "/srv/keep".into()],
        }
    }

    #[test]
    fn a_host_wide_target_splits_around_what_it_must_keep() {
        let p = policy(&["/init.scope"], true);
        let keep = Keep {
            own: "/system.slice/chaosd.service".into(),
            init: Some("/init.scope".into()),
        };
        let part = |c: &str| p.host_part(c, &keep);
        for excluded in [
            "/init.scope",
            "/system.slice/chaosd.service",
            "/system.slice/chaosd.service/x",
            "/system.slice/sshd.service",
            "/user.slice/sshd.service",
            "/srv/keep",
            "/srv/keep/deeper",
            "/chaosd-guardian-42",
            "/chaosd-stress-42",
        ] {
            assert_eq!(part(excluded), HostPart::Excluded, "{excluded}");
        }
        // Holds chaosd, a path exclusion, or is a slice under refuse_slices.
        for split in ["/system.slice", "/srv", "/user.slice"] {
            assert_eq!(part(split), HostPart::Split, "{split}");
        }
        for whole in [
            "/system.slice/nginx.service",
            "/srv/other",
            "/sshd.service2",
        ] {
            assert_eq!(part(whole), HostPart::Whole, "{whole}");
        }
        // A daemon and init in the root keep nothing apart.
        let root = Keep {
            own: "/".into(),
            init: Some("/".into()),
        };
        assert_eq!(p.host_part("/srv/other", &root), HostPart::Whole);
    }

    #[test]
    fn protected_cgroups_their_children_and_parents_are_refused() {
        let p = policy(&["system.slice/sshd.service/"], false);
        for refused in [
            "/system.slice/sshd.service",
            "/system.slice/sshd.service/x",
            "/system.slice",
        ] {
            let e = p.check_target(refused).unwrap_err();
            assert!(
                e.to_string().contains("policy.protected_cgroups"),
                "{refused}: {e}"
            );
        }
        assert!(p.check_target("/system.slice/sshd.service2").is_ok());
        assert!(p.check_target("/user.slice").is_ok());
    }

    #[test]
    fn the_policy_section_parses_with_defaults() {
        let c = crate::config::Config::from_toml("[policy]\nrefuse_slices = true\n").unwrap();
        assert!(c.policy.refuse_slices);
        assert_eq!(c.policy.max_concurrent_faults, 64);
        assert_eq!(c.policy.protected_cgroups, ["/init.scope"]);
        assert!(crate::config::Config::from_toml("[policy]\nmax_faults = 3\n").is_err());
    }

    #[test]
    fn init_scope_is_protected_by_default() {
        let e = PolicyConfig::default()
            .check_target("/init.scope")
            .unwrap_err();
        assert!(e.to_string().contains("/init.scope"), "{e}");
    }

    #[test]
    fn slices_are_refused_only_when_asked() {
        assert!(policy(&[], false).check_target("/user.slice").is_ok());
        let e = policy(&[], true).check_target("/user.slice").unwrap_err();
        assert!(e.to_string().contains("policy.refuse_slices"), "{e}");
        assert!(
            policy(&[], true)
                .check_target("/user.slice/x.scope")
                .is_ok()
        );
    }

    #[test]
    fn concurrent_faults_are_capped() {
        let p = policy(&[], false);
        assert!(p.check_room(1).is_ok());
        let e = p.check_room(2).unwrap_err();
        assert!(
            e.to_string().contains("policy.max_concurrent_faults = 2"),
            "{e}"
        );
    }
}
