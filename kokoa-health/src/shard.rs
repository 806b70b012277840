//! Splitting targets between several checker instances (SPEC 12) by consistent hashing.

use std::num::NonZeroU32;

/// A consistent-hash ring over the live checker instances: each target id has exactly one
/// owner, and a change of instances moves only the targets it must.
///
/// Every instance builds the same ring from the same list of live ids, whatever their
/// order, and so agrees on each target's owner without talking to the others. When an
/// instance joins, only targets that now belong to it move (about 1/n of them); when one
/// leaves, only its own targets move, spread over the rest. Each instance is placed on the
/// ring [`DEFAULT_VNODES`](Self::DEFAULT_VNODES) times to even out the shares.
///
/// The hash is part of the contract between instances and does not change within a major
/// version: 64-bit FNV-1a, finished with MurmurHash3's `fmix64`.
///
/// ```
/// use kokoa_health::Ring;
///
/// let ring = Ring::new(["checker-a", "checker-b", "checker-c"]);
/// let owner = ring.owner("edge-7f3a").expect("the ring has instances");
/// assert!(ring.owns(owner, "edge-7f3a"));
///
/// // checker-b leaves: only its targets move.
/// let smaller = Ring::new(["checker-c", "checker-a"]);
/// if owner != "checker-b" {
///     assert_eq!(smaller.owner("edge-7f3a"), Some(owner));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Sorted, without duplicates.
    instances: Vec<String>,
    /// (position, index into `instances`), sorted by position then instance id.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Points per instance: with 5 instances, each one's share of the ring measured within
    /// ±20 % of a fifth.
    pub const DEFAULT_VNODES: NonZeroU32 = NonZeroU32::new(256).expect("256 is not zero");

    /// A ring over `instances` (duplicates count once) with the default number of points.
    pub fn new<I, S>(instances: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_vnodes(instances, Self::DEFAULT_VNODES)
    }

    /// A ring placing each instance `vnodes` times. All instances of a deployment must use
    /// the same number, or they disagree about owners.
    pub fn with_vnodes<I, S>(instances: I, vnodes: NonZeroU32) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut instances: Vec<String> = instances.into_iter().map(Into::into).collect();
        instances.sort_unstable();
        instances.dedup();
        let mut points: Vec<(u64, u32)> = (0u32..)
            .zip(&instances)
            .flat_map(|(index, id)| {
                (0..vnodes.get())
                    .map(move |vnode| (stable_hash(&[id.as_bytes(), &vnode.to_le_bytes()]), index))
            })
            .collect();
        // Instances are sorted, so the index orders ties by id, the same on every instance.
        points.sort_unstable();
        Self { instances, points }
    }

    /// The instance that owns `key` (a target id); `None` when the ring has no instance.
    pub fn owner(&self, key: &str) -> Option<&str> {
        let position = stable_hash(&[key.as_bytes()]);
        let at = self.points.partition_point(|&(point, _)| point < position);
        let (_, index) = self.points.get(at).or_else(|| self.points.first())?;
        Some(&self.instances[*index as usize])
    }

    /// Whether `instance` owns `key`: the filter a checker applies to keep only its share.
    pub fn owns(&self, instance: &str, key: &str) -> bool {
        self.owner(key) == Some(instance)
    }

    /// The live instances, sorted.
    pub fn instances(&self) -> &[String] {
        &self.instances
    }

    /// Whether the ring has no instance (then nothing has an owner).
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

/// A hash that is the same on every machine, build and Rust version, unlike the standard
/// library's: 64-bit FNV-1a over the parts, with a byte that cannot occur in UTF-8 between
/// them, finished with MurmurHash3's `fmix64` so that close inputs land far apart.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        let separator = if i == 0 { None } else { Some(0xff) };
        for &byte in separator.iter().chain(part.iter()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests;
