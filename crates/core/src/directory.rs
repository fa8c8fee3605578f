//! The cluster-wide segment directory: the state machine the Raft log replicates
//! ([`crate::members`] applies every committed operation to it on every node, in log order).
//!
//! Names, sizes, base addresses, `O_EXCL`, unlink, and which nodes map each segment, so that a
//! name means one segment of one size at one address everywhere, and a segment lives until it
//! is unlinked *and* no node maps it (as a POSIX shared memory object does on one host).
//! Deterministic: the same operations in the same order give the same directory on every node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use dsm_proto::client::{OpenFlags, ShmError, MAX_NAME_LEN};
use dsm_proto::peer::{Caller, DirMsg, DirOp, SegmentMeta};
use dsm_proto::{NodeId, SegmentId, PAGE_SIZE};
use log::{info, warn};
use serde::{Deserialize, Serialize};

pub use dsm_proto::{ALIAS_START, WINDOW_START};
/// Address span a segment reserves at least, so it can grow without moving.
pub const MIN_SPAN: u64 = 1 << 30;
/// Largest segment (the page index is a `u32`).
pub const MAX_SIZE: u64 = (u32::MAX as u64) * PAGE_SIZE as u64;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    meta: SegmentMeta,
    /// Nodes that hold the segment (a process opened or maps it).
    attached: BTreeSet<NodeId>,
    /// Nodes where a process maps it: its base may move only while there are none.
    mapping: BTreeSet<NodeId>,
    unlinked: bool,
}

/// What an operation answers, and what every node must hear.
#[derive(Debug)]
pub struct Effect {
    /// The answer to the requester.
    pub reply: Result<SegmentMeta, ShmError>,
    /// What every node applying the operation learns (a size change, a move, a removal).
    pub broadcast: Option<DirMsg>,
}

/// The directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Directory {
    segments: BTreeMap<SegmentId, Entry>,
    names: HashMap<String, SegmentId>,
    next_serial: u64,
    space: AddressSpace,
    /// The incarnation of the node whose operation is being applied.
    incarnation: u64,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            segments: BTreeMap::new(),
            names: HashMap::new(),
            next_serial: 1,
            space: AddressSpace::new(WINDOW_START, ALIAS_START),
            incarnation: 0,
        }
    }
}

impl Directory {
    /// Carries out `op` for node `from`, as the log entry at `index` (a segment it creates takes
    /// the index as its serial: never the same twice while the log lives).
    pub fn apply_at(&mut self, index: u64, from: NodeId, incarnation: u64, op: DirOp) -> Effect {
        self.next_serial = self.next_serial.max(index);
        self.incarnation = incarnation;
        self.apply(from, op)
    }

    /// Carries out `op` for node `from`.
    pub fn apply(&mut self, from: NodeId, op: DirOp) -> Effect {
        let mut broadcast = None;
        let reply = match op {
            DirOp::Open { name, flags, who } => self.open(from, &name, flags, &who, &mut broadcast),
            DirOp::Resize { segment, size } => self.resize(segment, size, &mut broadcast),
            DirOp::Unlink { name, who } => self.unlink(&name, &who, &mut broadcast),
            DirOp::Attach { segment } => match self.segments.get_mut(&segment) {
                Some(e) => {
                    e.attached.insert(from);
                    Ok(e.meta.clone())
                }
                None => Err(ShmError::Gone),
            },
            DirOp::Detach { segment } => {
                let reply = match self.segments.get_mut(&segment) {
                    Some(e) => {
                        e.attached.remove(&from);
                        e.mapping.remove(&from);
                        Ok(e.meta.clone())
                    }
                    None => Err(ShmError::Gone),
                };
                broadcast = self.reap(segment);
                reply
            }
            DirOp::Chmod {
                segment,
                who,
                mode,
                uid,
                gid,
            } => match self.segments.get_mut(&segment) {
                None => Err(ShmError::Gone),
                Some(e) => {
                    let owner = who.uid == 0 || who.uid == e.meta.uid;
                    let allowed = owner
                        && (who.uid == 0 || uid.is_none_or(|u| u == e.meta.uid))
                        && (who.uid == 0
                            || gid.is_none_or(|g| g == who.gid || who.groups.contains(&g)));
                    if !allowed {
                        Err(ShmError::PermissionDenied)
                    } else {
                        e.meta.mode = mode.map_or(e.meta.mode, |m| m & 0o7777);
                        e.meta.uid = uid.unwrap_or(e.meta.uid);
                        e.meta.gid = gid.unwrap_or(e.meta.gid);
                        broadcast = Some(DirMsg::Moved(e.meta.clone()));
                        Ok(e.meta.clone())
                    }
                }
            },
            DirOp::Map { segment } => match self.segments.get_mut(&segment) {
                Some(e) => {
                    e.mapping.insert(from);
                    Ok(e.meta.clone())
                }
                None => Err(ShmError::Gone),
            },
            DirOp::Unmap { segment } => match self.segments.get_mut(&segment) {
                Some(e) => {
                    e.mapping.remove(&from);
                    Ok(e.meta.clone())
                }
                None => Err(ShmError::Gone),
            },
            DirOp::OpenId {
                segment,
                who,
                write,
            } => match self.segments.get(&segment) {
                Some(e) if who.permits(e.meta.uid, e.meta.gid, e.meta.mode, write) => {
                    Ok(e.meta.clone())
                }
                Some(_) => Err(ShmError::PermissionDenied),
                None => Err(ShmError::Gone),
            },
            DirOp::UnlinkId { segment, who } => match self.segments.get(&segment) {
                Some(e) if !e.unlinked => {
                    let name = format!("/{}", e.meta.name);
                    self.unlink(&name, &who, &mut broadcast)
                }
                Some(e) => Ok(e.meta.clone()),
                None => Err(ShmError::Gone),
            },
        };
        Effect { reply, broadcast }
    }

    /// A node died: it holds and maps nothing any more. Returns what every node must hear (the
    /// segments that went with it: unlinked, and now attached nowhere).
    pub fn node_died(&mut self, node: NodeId) -> Vec<DirMsg> {
        let held: Vec<SegmentId> = self
            .segments
            .iter()
            .filter(|(_, e)| e.attached.contains(&node) || e.mapping.contains(&node))
            .map(|(&id, _)| id)
            .collect();
        let mut news = Vec::new();
        for id in held {
            if let Some(e) = self.segments.get_mut(&id) {
                e.attached.remove(&node);
                e.mapping.remove(&node);
            }
            news.extend(self.reap(id));
        }
        news
    }

    /// Every segment, in id order.
    pub fn segments(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.segments.values().map(|e| &e.meta)
    }

    /// Every segment with the nodes it is attached to (a process opened or maps it there) and
    /// whether its name was removed, in id order.
    pub fn listing(&self) -> impl Iterator<Item = (&SegmentMeta, &BTreeSet<NodeId>, bool)> {
        self.segments
            .values()
            .map(|e| (&e.meta, &e.attached, e.unlinked))
    }

    /// The segment, if it exists.
    pub fn get(&self, id: SegmentId) -> Option<&SegmentMeta> {
        self.segments.get(&id).map(|e| &e.meta)
    }

    fn open(
        &mut self,
        from: NodeId,
        name: &str,
        flags: OpenFlags,
        who: &Caller,
        broadcast: &mut Option<DirMsg>,
    ) -> Result<SegmentMeta, ShmError> {
        let key = normalize(name)?;
        if let Some(&id) = self.names.get(key) {
            if flags.create && flags.exclusive {
                return Err(ShmError::AlreadyExists);
            }
            // As open(2) on tmpfs: the mode bits for the caller's user and groups.
            let meta = &self.segments[&id].meta;
            if !who.permits(meta.uid, meta.gid, meta.mode, flags.write || flags.truncate) {
                return Err(ShmError::PermissionDenied);
            }
            if flags.truncate {
                return self.resize(id, 0, broadcast);
            }
            return Ok(self.segments[&id].meta.clone());
        }
        if !flags.create {
            return Err(ShmError::NotFound);
        }
        // The requesting node creates the segment: it owns every page at first.
        let id = SegmentId::new(from, self.next_serial);
        let base = self.space.alloc(MIN_SPAN).ok_or(ShmError::NoMemory)?;
        self.next_serial += 1;
        let meta = SegmentMeta {
            id,
            name: key.to_owned(),
            size: 0,
            base,
            span: MIN_SPAN,
            mode: flags.mode & 0o7777,
            uid: who.uid,
            gid: who.gid,
            creator_incarnation: self.incarnation,
        };
        info!("created /{key} ({id}) for {from} at {base:#x}");
        self.segments.insert(
            id,
            Entry {
                meta: meta.clone(),
                attached: BTreeSet::new(),
                mapping: BTreeSet::new(),
                unlinked: false,
            },
        );
        self.names.insert(key.to_owned(), id);
        Ok(meta)
    }

    fn resize(
        &mut self,
        id: SegmentId,
        size: u64,
        broadcast: &mut Option<DirMsg>,
    ) -> Result<SegmentMeta, ShmError> {
        if size > MAX_SIZE {
            return Err(ShmError::TooLarge);
        }
        let entry = self.segments.get_mut(&id).ok_or(ShmError::Gone)?;
        let mut moved = false;
        if size > entry.meta.span {
            if !entry.mapping.is_empty() {
                warn!(
                    "/{} cannot grow to {size} bytes while mapped: its address span is {} bytes",
                    entry.meta.name, entry.meta.span
                );
                return Err(ShmError::TooLarge);
            }
            let span = size.next_multiple_of(MIN_SPAN);
            let base = self.space.alloc(span).ok_or(ShmError::NoMemory)?;
            self.space.free(entry.meta.base, entry.meta.span);
            entry.meta.base = base;
            entry.meta.span = span;
            moved = true;
        }
        entry.meta.size = size;
        *broadcast = Some(if moved {
            DirMsg::Moved(entry.meta.clone())
        } else {
            DirMsg::Sized { segment: id, size }
        });
        Ok(entry.meta.clone())
    }

    fn unlink(
        &mut self,
        name: &str,
        who: &Caller,
        broadcast: &mut Option<DirMsg>,
    ) -> Result<SegmentMeta, ShmError> {
        let key = normalize(name)?;
        let &id = self.names.get(key).ok_or(ShmError::NotFound)?;
        // As in /dev/shm (sticky, world-writable): only the owner or root removes a name.
        if who.uid != 0 && who.uid != self.segments[&id].meta.uid {
            return Err(ShmError::PermissionDenied);
        }
        self.names.remove(key);
        let entry = self.segments.get_mut(&id).expect("named segments exist");
        entry.unlinked = true;
        let meta = entry.meta.clone();
        info!("unlinked /{key} ({id})");
        *broadcast = self.reap(id);
        Ok(meta)
    }

    fn reap(&mut self, id: SegmentId) -> Option<DirMsg> {
        match self.segments.get(&id) {
            Some(e) if e.unlinked && e.attached.is_empty() => {
                let e = self.segments.remove(&id).expect("present");
                self.space.free(e.meta.base, e.meta.span);
                info!("removed {id}: unlinked and mapped nowhere");
                Some(DirMsg::Removed { segment: id })
            }
            _ => None,
        }
    }
}

/// Strips the leading `/`s as glibc's `shm_open` does and checks what remains.
fn normalize(name: &str) -> Result<&str, ShmError> {
    let key = name.trim_start_matches('/');
    if key.is_empty() || key.contains('/') || key.contains('\0') {
        return Err(ShmError::InvalidArgument);
    }
    if key.len() > MAX_NAME_LEN {
        return Err(ShmError::NameTooLong);
    }
    Ok(key)
}

/// First-fit allocator of address spans inside the window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AddressSpace {
    /// Free spans, start → length, never adjacent (merged on free).
    free: BTreeMap<u64, u64>,
}

impl AddressSpace {
    fn new(start: u64, end: u64) -> AddressSpace {
        AddressSpace {
            free: BTreeMap::from([(start, end - start)]),
        }
    }

    fn alloc(&mut self, len: u64) -> Option<u64> {
        let (&start, &free_len) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(start)
    }

    fn free(&mut self, start: u64, len: u64) {
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back() {
            if prev + prev_len == start {
                self.free.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn open(name: &str, create: bool, excl: bool) -> DirOp {
        DirOp::Open {
            name: name.into(),
            flags: OpenFlags {
                create,
                exclusive: excl,
                truncate: false,
                mode: 0o600,
                write: true,
            },
            who: Caller::default(),
        }
    }

    #[test]
    fn by_id_open_lasts_until_the_memory_goes_and_unlink_removes_the_name() {
        let mut d = Directory::default();
        let made = d.apply(A, open("/sysv:0x1", true, true)).reply.unwrap();
        d.apply(B, DirOp::Attach { segment: made.id });
        let by_id = d
            .apply(
                B,
                DirOp::OpenId {
                    segment: made.id,
                    who: Caller::default(),
                    write: true,
                },
            )
            .reply
            .unwrap();
        assert_eq!((by_id.id, by_id.base), (made.id, made.base));
        let gone = d.apply(
            B,
            DirOp::UnlinkId {
                segment: made.id,
                who: Caller::default(),
            },
        );
        assert!(
            gone.reply.is_ok() && gone.broadcast.is_none(),
            "still attached"
        );
        assert_eq!(
            d.apply(A, open("/sysv:0x1", false, false)).reply,
            Err(ShmError::NotFound),
            "the name is gone"
        );
        assert!(
            d.apply(
                A,
                DirOp::OpenId {
                    segment: made.id,
                    who: Caller::default(),
                    write: true,
                }
            )
            .reply
            .is_ok(),
            "the memory is not"
        );
        assert!(
            d.apply(
                B,
                DirOp::UnlinkId {
                    segment: made.id,
                    who: Caller::default(),
                }
            )
            .reply
            .is_ok(),
            "again: harmless"
        );
        let last = d.apply(B, DirOp::Detach { segment: made.id });
        assert!(matches!(last.broadcast, Some(DirMsg::Removed { .. })));
        assert_eq!(
            d.apply(
                A,
                DirOp::OpenId {
                    segment: made.id,
                    who: Caller::default(),
                    write: true,
                }
            )
            .reply,
            Err(ShmError::Gone)
        );
    }

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    fn open_as(name: &str, who: &Caller, create: bool, write: bool, mode: u32) -> DirOp {
        DirOp::Open {
            name: name.into(),
            flags: OpenFlags {
                create,
                exclusive: false,
                truncate: false,
                mode,
                write,
            },
            who: who.clone(),
        }
    }

    #[test]
    fn owner_and_mode_are_checked_as_tmpfs_would() {
        let mut d = Directory::default();
        let (alice, bob, carol) = (
            user(1000, 100, &[]),
            user(1001, 101, &[]),
            user(1002, 102, &[100]),
        );
        let root = user(0, 0, &[]);
        let made = d
            .apply(A, open_as("/p", &alice, true, true, 0o640))
            .reply
            .unwrap();
        assert_eq!((made.uid, made.gid, made.mode), (1000, 100, 0o640));
        let denied = Err(ShmError::PermissionDenied);
        assert_eq!(
            d.apply(A, open_as("/p", &bob, false, false, 0)).reply,
            denied
        );
        assert!(
            d.apply(A, open_as("/p", &carol, false, false, 0))
                .reply
                .is_ok(),
            "group read"
        );
        assert_eq!(
            d.apply(A, open_as("/p", &carol, false, true, 0)).reply,
            denied,
            "no group write"
        );
        assert!(d
            .apply(A, open_as("/p", &root, false, true, 0))
            .reply
            .is_ok());
        let by_id = |who: &Caller, write| DirOp::OpenId {
            segment: made.id,
            who: who.clone(),
            write,
        };
        assert_eq!(d.apply(A, by_id(&bob, false)).reply, denied);
        assert!(d.apply(A, by_id(&alice, true)).reply.is_ok());
        let unlink = |who: &Caller| DirOp::Unlink {
            name: "/p".into(),
            who: who.clone(),
        };
        let chmod = |who: &Caller, mode, uid| DirOp::Chmod {
            segment: made.id,
            who: who.clone(),
            mode,
            uid,
            gid: None,
        };
        assert_eq!(d.apply(A, chmod(&bob, Some(0o666), None)).reply, denied);
        assert_eq!(
            d.apply(A, chmod(&alice, None, Some(1001))).reply,
            denied,
            "chown is root's"
        );
        let changed = d.apply(A, chmod(&alice, Some(0o644), None));
        assert_eq!(changed.reply.clone().unwrap().mode, 0o644);
        assert!(
            matches!(changed.broadcast, Some(DirMsg::Moved(_))),
            "every node hears it"
        );
        assert!(
            d.apply(A, open_as("/p", &bob, false, false, 0))
                .reply
                .is_ok(),
            "now others read"
        );
        assert!(d.apply(A, chmod(&root, None, Some(1001))).reply.is_ok());
        assert_eq!(
            d.apply(A, unlink(&carol)).reply,
            denied,
            "only the owner removes the name"
        );
        assert_eq!(
            d.apply(A, unlink(&alice)).reply,
            denied,
            "alice gave it to bob"
        );
        assert!(d.apply(A, unlink(&bob)).reply.is_ok());
    }

    #[test]
    fn one_name_one_segment_cluster_wide() {
        let mut d = Directory::default();
        assert_eq!(
            d.apply(A, open("/a", false, false)).reply,
            Err(ShmError::NotFound)
        );
        let made = d.apply(B, open("/a", true, true)).reply.unwrap();
        assert_eq!(made.id.creator(), B, "the requesting node creates it");
        assert_eq!(
            d.apply(A, open("a", true, true)).reply,
            Err(ShmError::AlreadyExists)
        );
        let seen = d.apply(A, open("/a", true, false)).reply.unwrap();
        assert_eq!((seen.id, seen.base), (made.id, made.base));
        let resized = d.apply(
            A,
            DirOp::Resize {
                segment: made.id,
                size: 10_000,
            },
        );
        assert_eq!(
            resized.broadcast,
            Some(DirMsg::Sized {
                segment: made.id,
                size: 10_000
            })
        );
    }

    #[test]
    fn lives_until_unlinked_and_mapped_nowhere() {
        let mut d = Directory::default();
        let id = d.apply(A, open("/s", true, false)).reply.unwrap().id;
        d.apply(A, DirOp::Attach { segment: id });
        d.apply(B, DirOp::Attach { segment: id });
        let e = d.apply(
            B,
            DirOp::Unlink {
                name: "/s".into(),
                who: Caller::default(),
            },
        );
        assert!(e.reply.is_ok() && e.broadcast.is_none(), "still mapped");
        assert_eq!(
            d.apply(B, open("/s", false, false)).reply,
            Err(ShmError::NotFound)
        );
        assert!(d
            .apply(A, DirOp::Detach { segment: id })
            .broadcast
            .is_none());
        let e = d.apply(B, DirOp::Detach { segment: id });
        assert_eq!(e.broadcast, Some(DirMsg::Removed { segment: id }));
        assert!(d.get(id).is_none());
    }

    #[test]
    fn bad_names_are_refused() {
        let mut d = Directory::default();
        assert_eq!(
            d.apply(A, open("/", true, false)).reply,
            Err(ShmError::InvalidArgument)
        );
        assert_eq!(
            d.apply(A, open("/a/b", true, false)).reply,
            Err(ShmError::InvalidArgument)
        );
        let long = "x".repeat(300);
        assert_eq!(
            d.apply(A, open(&long, true, false)).reply,
            Err(ShmError::NameTooLong)
        );
    }

    #[test]
    fn growth_moves_the_base_only_while_unmapped() {
        let mut d = Directory::default();
        let m = d.apply(A, open("/g", true, false)).reply.unwrap();
        let moved = d
            .apply(
                A,
                DirOp::Resize {
                    segment: m.id,
                    size: 3 * MIN_SPAN / 2,
                },
            )
            .reply
            .unwrap();
        assert_ne!(moved.base, m.base);
        assert_eq!(moved.span, 2 * MIN_SPAN);
        // Held open (not mapped) by a node: it may still move, and every node hears where.
        d.apply(B, DirOp::Attach { segment: m.id });
        let held = d.apply(
            A,
            DirOp::Resize {
                segment: m.id,
                size: 5 * MIN_SPAN / 2,
            },
        );
        let Some(DirMsg::Moved(news)) = held.broadcast else {
            panic!("a move is announced: {:?}", held.broadcast);
        };
        assert_eq!(
            (news.base, news.span),
            (held.reply.unwrap().base, 3 * MIN_SPAN)
        );
        // Mapped by a node: it may not.
        assert_eq!(
            d.apply(A, DirOp::Map { segment: m.id }).reply.unwrap().base,
            news.base
        );
        let grow = d.apply(
            A,
            DirOp::Resize {
                segment: m.id,
                size: 4 * MIN_SPAN,
            },
        );
        assert_eq!(grow.reply, Err(ShmError::TooLarge));
        d.apply(A, DirOp::Unmap { segment: m.id });
        let grow = d.apply(
            A,
            DirOp::Resize {
                segment: m.id,
                size: 4 * MIN_SPAN,
            },
        );
        assert!(grow.reply.is_ok(), "unmapped everywhere again: it moves");
        let other = d.apply(A, open("/h", true, false)).reply.unwrap();
        assert_eq!(other.base, m.base, "the freed span is reused");
    }

    #[test]
    fn address_space_merges_freed_spans() {
        let mut s = AddressSpace::new(0, 100);
        let a = s.alloc(10).unwrap();
        let b = s.alloc(10).unwrap();
        let c = s.alloc(10).unwrap();
        s.free(b, 10);
        s.free(a, 10);
        s.free(c, 10);
        assert_eq!(s.free, BTreeMap::from([(0, 100)]));
        assert_eq!(s.alloc(101), None);
    }
}
