//! The maps an earlier run pinned are reused by name, and aya reuses a pin without comparing
//! it with the map the object declares. A release that changed a map's type, key, value or
//! size would then share bytes with programs still attached that read them another way (or
//! fail to verify against the old map with an obscure verifier message). This checks every
//! pinned map against the object before loading, so such an upgrade stops at start-up with
//! the map, the difference and the way out; in a rolling upgrade the agent it was to replace
//! keeps serving.
use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use aya::maps::MapInfo;
use aya_obj::maps::PinningType;

/// What a map's programs and users agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// The ways `found` differs from `expected`, e.g. "value size 16 → 24 bytes"; empty if none.
pub fn differences(expected: &MapLayout, found: &MapLayout) -> Vec<String> {
    let mut out = Vec::new();
    let mut compare = |what: &str, unit: &str, expected: u32, found: u32| {
        if expected != found {
            out.push(format!(
                "{what} {found}{unit} here, {expected}{unit} in this release"
            ));
        }
    };
    compare("map type", "", expected.map_type, found.map_type);
    compare("key size", " bytes", expected.key_size, found.key_size);
    compare(
        "value size",
        " bytes",
        expected.value_size,
        found.value_size,
    );
    compare("max entries", "", expected.max_entries, found.max_entries);
    compare("flags", "", expected.flags, found.flags);
    out
}

/// A pinned map whose layout is not this release's.
#[derive(Debug)]
pub struct Mismatch {
    pub map: String,
    pub pin: String,
    pub differences: Vec<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "map {} pinned at {} has another layout than this release expects ({})",
            self.map,
            self.pin,
            self.differences.join(", ")
        )
    }
}

/// Compares every map of `object` pinned by name with its pin under `maps_dir`, if any.
pub fn check(object: &[u8], maps_dir: &Path) -> anyhow::Result<()> {
    let object = aya_obj::Object::parse(object).context("parsing weft's eBPF object")?;
    let mut mismatches = Vec::new();
    let mut names: Vec<&String> = object.maps.keys().collect();
    names.sort();
    for name in names {
        let map = &object.maps[name];
        if map.pinning() != PinningType::ByName {
            continue;
        }
        let pin = maps_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&pin)
            .with_context(|| format!("reading the pinned map {}", pin.display()))?;
        let found = MapLayout {
            // An unknown type is a difference too; 0 (unspecified) is never a real map's.
            map_type: info.map_type().map_or(0, |t| t as u32),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        let expected = MapLayout {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        };
        let differences = differences(&expected, &found);
        if !differences.is_empty() {
            mismatches.push(Mismatch {
                map: name.clone(),
                pin: pin.display().to_string(),
                differences,
            });
        }
    }
    if mismatches.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    let pin_root = maps_dir.parent().unwrap_or(maps_dir);
    bail!(
        "{}. Another release of weft-agent pinned these maps and the programs it attached \
         still use them: run that release on this node, or drain the node and remove {} \
         (its links are what attach weft to the node's pods: removing it detaches weft from \
         all of them) before starting this one",
        list.join("; "),
        pin_root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: MapLayout = MapLayout {
        map_type: 1,
        key_size: 8,
        value_size: 16,
        max_entries: 4096,
        flags: 0,
    };

    #[test]
    fn the_same_layout_has_no_differences() {
        assert!(differences(&HASH, &HASH).is_empty());
    }

    #[test]
    fn every_difference_is_named_with_both_values() {
        let found = MapLayout {
            map_type: 9,
            value_size: 24,
            max_entries: 1024,
            ..HASH
        };
        assert_eq!(
            differences(&HASH, &found),
            [
                "map type 9 here, 1 in this release",
                "value size 24 bytes here, 16 bytes in this release",
                "max entries 1024 here, 4096 in this release",
            ]
        );
    }

    #[test]
    fn a_directory_without_pins_passes_and_the_embedded_object_parses() {
        let empty = tempfile::tempdir().expect("a temporary directory");
        check(super::super::loader::OBJECT, empty.path())
            .expect("nothing pinned: nothing to compare");
    }
}
