//! The blast-radius policy (`[policy]` in the config): cgroups no fault may target, whole
//! slices if the operator says so, and how many faults may be active at once. The hard rules
//! (the cgroup2 root, chaosd's own cgroup) live in [`crate::host::cgroup::resolve`].

use crate::{
    config::PolicyConfig,
    error::{FaultError, TargetError},
    host::cgroup::is_same_or_ancestor,
};

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
        }
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
