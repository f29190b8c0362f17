//! Stream cursors: where a reader stands in each partition of a topic, and
//! which seek of the stream it belongs to. Written `{generation}~{partition}:{next},…`
//! (`3~0:120,2:77`): opaque to readers, readable by people. `next` is the
//! next offset to read, so a cursor never needs "minus one".

use std::{collections::BTreeMap, fmt};

/// A parsed cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The stream's seek count when the cursor was issued: a seek makes
    /// older cursors stale.
    pub generation: u64,
    /// Topic partition → next offset to read.
    pub positions: BTreeMap<u32, u64>,
}

impl Cursor {
    pub fn parse(text: &str) -> Result<Cursor, String> {
        let bad = |why: &str| {
            format!("cursor `{text}`: {why} (expected `generation~partition:offset,…`)")
        };
        let (generation, rest) = text.split_once('~').ok_or_else(|| bad("no `~`"))?;
        let generation = generation
            .parse()
            .map_err(|_| bad("the generation is not a number"))?;
        let mut positions = BTreeMap::new();
        for part in rest.split(',').filter(|p| !p.is_empty()) {
            let (partition, offset) = part
                .split_once(':')
                .ok_or_else(|| bad(&format!("`{part}` has no `:`")))?;
            let partition: u32 = partition
                .parse()
                .map_err(|_| bad(&format!("partition `{partition}` is not a number")))?;
            let offset: u64 = offset
                .parse()
                .map_err(|_| bad(&format!("offset `{offset}` is not a number")))?;
            if positions.insert(partition, offset).is_some() {
                return Err(bad(&format!("partition {partition} appears twice")));
            }
        }
        Ok(Cursor {
            generation,
            positions,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~", self.generation)?;
        let mut first = true;
        for (partition, offset) in &self.positions {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{partition}:{offset}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_say_why() {
        for text in ["0~", "3~0:120,2:77", "12~7:0"] {
            let cursor = Cursor::parse(text).unwrap();
            let again = Cursor::parse(&cursor.to_string()).unwrap();
            assert_eq!(cursor, again, "{text}");
        }
        assert_eq!(
            Cursor::parse("3~2:77,0:120").unwrap().to_string(),
            "3~0:120,2:77"
        );
        for (text, why) in [
            ("0:1", "no `~`"),
            ("x~0:1", "generation"),
            ("1~0-1", "has no `:`"),
            ("1~a:1", "partition `a`"),
            ("1~0:-1", "offset `-1`"),
            ("1~0:1,0:2", "twice"),
        ] {
            let err = Cursor::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
