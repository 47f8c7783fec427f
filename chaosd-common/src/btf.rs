//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`): struct member offsets and
//! function argument counts, which the I/O programs need because Rust eBPF has no CO-RE.
//!
//! Format: `include/uapi/linux/btf.h` — a header, then the type section (each `btf_type`
//! followed by kind-specific data), then the string section. Type ids start at 1.

use std::{collections::HashMap, path::Path};

use crate::{ancestry::AncestryOffsets, io::IoOffsets};
use anyhow::{Context as _, bail};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    /// Bit offset from the start of the struct.
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Struct/union members; function prototype parameters (only their count matters).
    members: Vec<Member>,
    vlen: u32,
}

/// Parsed kernel BTF, with an index of named structs and functions.
pub struct KernelBtf {
    types: Vec<Type>,
    strings: Vec<u8>,
    by_name: HashMap<(u32, String), u32>,
}

impl KernelBtf {
    pub fn from_sys_fs() -> anyhow::Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&data).with_context(|| format!("parsing BTF of {}", path.display()))
    }

    pub fn parse(data: &[u8]) -> anyhow::Result<Self> {
        let u16_at = |o: usize| -> anyhow::Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(o..o + 2).context("truncated")?.try_into()?,
            ))
        };
        let u32_at = |o: usize| -> anyhow::Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(o..o + 4).context("truncated")?.try_into()?,
            ))
        };
        if u16_at(0)? != BTF_MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let str_off = hdr_len + u32_at(16)? as usize;
        let str_len = u32_at(20)? as usize;
        let strings = data
            .get(str_off..str_off + str_len)
            .context("string section out of bounds")?
            .to_vec();
        let end = type_off + type_len;
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            size_or_type: 0,
            members: Vec::new(),
            vlen: 0,
        }];
        let mut o = type_off;
        while o < end {
            let name = u32_at(o)?;
            let info = u32_at(o + 4)?;
            let size_or_type = u32_at(o + 8)?;
            o += 12;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => o += 4,
                KIND_ARRAY => o += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(o + 8)?;
                        members.push(Member {
                            name: u32_at(o)?,
                            type_id: u32_at(o + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                        o += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => o += 8 * vlen as usize,
                KIND_DATASEC | KIND_ENUM64 => o += 12 * vlen as usize,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                other => bail!("unknown BTF kind {other} at type {}", types.len()),
            }
            types.push(Type {
                name,
                kind,
                size_or_type,
                members,
                vlen,
            });
        }
        let mut btf = KernelBtf {
            types,
            strings,
            by_name: HashMap::new(),
        };
        let mut by_name = HashMap::new();
        for (id, t) in btf.types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_FUNC) && t.name != 0 {
                by_name
                    .entry((t.kind, btf.string(t.name).to_string()))
                    .or_insert(id as u32);
            }
        }
        btf.by_name = by_name;
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn struct_id(&self, name: &str) -> anyhow::Result<u32> {
        self.by_name
            .get(&(KIND_STRUCT, name.to_string()))
            .copied()
            .with_context(|| format!("struct {name} is not in the kernel's BTF"))
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `member` in the struct or union `id`, looking into anonymous members.
    fn find_member(&self, id: u32, member: &str) -> Option<u32> {
        let t = self.types.get(self.resolve(id) as usize)?;
        for m in &t.members {
            if m.name == 0 {
                let inner = self.resolve(m.type_id);
                if matches!(
                    self.types.get(inner as usize)?.kind,
                    KIND_STRUCT | KIND_UNION
                ) && let Some(off) = self.find_member(inner, member)
                {
                    return Some(m.bit_offset + off);
                }
            } else if self.string(m.name) == member {
                return Some(m.bit_offset);
            }
        }
        None
    }

    /// Byte offset of `strukt.member` (members of anonymous structs/unions included).
    pub fn member_offset(&self, strukt: &str, member: &str) -> anyhow::Result<u64> {
        let id = self.struct_id(strukt)?;
        let bits = self
            .find_member(id, member)
            .with_context(|| format!("struct {strukt} has no member {member} in this kernel"))?;
        if bits % 8 != 0 {
            bail!("{strukt}.{member} is a bitfield");
        }
        Ok(u64::from(bits / 8))
    }

    /// Number of parameters of the kernel function `name`, if it is in the BTF.
    pub fn func_arg_count(&self, name: &str) -> Option<u32> {
        let id = *self.by_name.get(&(KIND_FUNC, name.to_string()))?;
        let proto = self
            .types
            .get(self.types.get(id as usize)?.size_or_type as usize)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(proto.vlen)
    }

    /// The offsets of the cgroup ancestry walk, or why they cannot be had (on 6.0 and later
    /// `cgroup.ancestor_ids` is gone; those kernels allow the helper instead).
    pub fn ancestry_offsets(&self) -> anyhow::Result<AncestryOffsets> {
        Ok(AncestryOffsets {
            task_cgroups: self.member_offset("task_struct", "cgroups")?,
            css_set_dfl_cgrp: self.member_offset("css_set", "dfl_cgrp")?,
            cgroup_level: self.member_offset("cgroup", "level")?,
            cgroup_ancestor_ids: self.member_offset("cgroup", "ancestor_ids")?,
            walk: 1,
        })
    }

    /// The offsets the I/O programs read, or why they cannot be had.
    pub fn io_offsets(&self) -> anyhow::Result<IoOffsets> {
        let path_dentry = self.member_offset("path", "dentry")?;
        Ok(IoOffsets {
            file_dentry: self.member_offset("file", "f_path")? + path_dentry,
            dentry_parent: self.member_offset("dentry", "d_parent")?,
            dentry_inode: self.member_offset("dentry", "d_inode")?,
            dentry_sb: self.member_offset("dentry", "d_sb")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            sb_dev: self.member_offset("super_block", "s_dev")?,
            path_dentry,
            valid: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the BTF of the kernel the tests run on, when it has one.
    #[test]
    fn reads_offsets_of_the_running_kernel() {
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            eprintln!("no {VMLINUX_BTF}: skipped");
            return;
        };
        let o = btf.io_offsets().unwrap();
        assert_eq!(
            o.path_dentry, 8,
            "struct path is {{ vfsmount *mnt; dentry *dentry; }}"
        );
        assert!(o.file_dentry > 0 && o.dentry_parent > 0 && o.inode_ino > 0);
        assert_eq!(btf.func_arg_count("bpf_lsm_file_open"), Some(1));
        assert_eq!(btf.func_arg_count("bpf_lsm_file_permission"), Some(2));
        assert_eq!(btf.func_arg_count("bpf_lsm_inode_rename"), Some(4));
        match btf.ancestry_offsets() {
            Ok(c) => assert!(c.task_cgroups > 0 && c.cgroup_ancestor_ids > c.cgroup_level),
            Err(e) => assert!(format!("{e:#}").contains("ancestor_ids"), "{e:#}"),
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(KernelBtf::parse(&[0u8; 8]).is_err());
    }
}
