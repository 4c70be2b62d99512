//! The order in which one object's symbols go out within a cycle.

use super::packet::BlockLayout;

/// One symbol to send: a source symbol, or the `index`-th repair symbol of this cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Source symbol `esi` of block `sbn`.
    Source { sbn: u8, esi: u32 },
    /// This cycle's repair symbol number `index` (0-based) of block `sbn`.
    Repair { sbn: u8, index: u32 },
}

/// Walks an object's symbols round-robin across its source blocks: symbol 0 of every block,
/// then symbol 1 of every block, …, then the repair symbols the same way. A burst of loss then
/// costs every block a little instead of one block a lot, which matters because each block
/// must complete on its own.
#[derive(Clone, Debug)]
pub(crate) struct ObjectCursor {
    layout: BlockLayout,
    blocks: u8,
    /// Repair symbols per cycle for a block of `layout.symbols(0)` symbols, and for a block of
    /// the short size.
    repair_long: u32,
    repair_short: u32,
    repair: bool,
    round: u32,
    block: u8,
}

impl ObjectCursor {
    pub(crate) fn new(
        layout: BlockLayout,
        blocks: u8,
        repair_long: u32,
        repair_short: u32,
    ) -> Self {
        ObjectCursor {
            layout,
            blocks,
            repair_long,
            repair_short,
            repair: false,
            round: 0,
            block: 0,
        }
    }

    /// Source plus repair symbols the cursor yields in all.
    pub(crate) fn total(&self) -> u64 {
        (0..self.blocks)
            .map(|sbn| u64::from(self.layout.symbols(sbn)) + u64::from(self.repairs(sbn)))
            .sum()
    }

    fn repairs(&self, sbn: u8) -> u32 {
        if self.layout.symbols(sbn) == self.layout.symbols(0) {
            self.repair_long
        } else {
            self.repair_short
        }
    }

    /// Moves to the next block, wrapping to the next round after the last one.
    fn advance(&mut self) {
        self.block += 1;
        if self.block == self.blocks {
            self.block = 0;
            self.round += 1;
        }
    }
}

impl Iterator for ObjectCursor {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        loop {
            let sbn = self.block;
            let round = self.round;
            if !self.repair {
                if round >= self.layout.symbols(0) {
                    self.repair = true;
                    self.round = 0;
                    self.block = 0;
                    continue;
                }
                self.advance();
                if round < self.layout.symbols(sbn) {
                    return Some(Slot::Source { sbn, esi: round });
                }
            } else {
                if round >= self.repair_long.max(self.repair_short) {
                    return None;
                }
                self.advance();
                if round < self.repairs(sbn) {
                    return Some(Slot::Repair { sbn, index: round });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::block_layout;
    use super::*;

    #[test]
    fn interleaves_blocks_then_repairs() {
        // 5 symbols in 2 blocks (3 + 2), 2 repairs for the long block and 1 for the short.
        let cursor = ObjectCursor::new(block_layout(5, 2), 2, 2, 1);
        assert_eq!(cursor.total(), 8);
        let slots: Vec<Slot> = cursor.collect();
        use Slot::*;
        assert_eq!(
            slots,
            vec![
                Source { sbn: 0, esi: 0 },
                Source { sbn: 1, esi: 0 },
                Source { sbn: 0, esi: 1 },
                Source { sbn: 1, esi: 1 },
                Source { sbn: 0, esi: 2 },
                Repair { sbn: 0, index: 0 },
                Repair { sbn: 1, index: 0 },
                Repair { sbn: 0, index: 1 },
            ]
        );
    }

    #[test]
    fn single_symbol_without_repair() {
        let slots: Vec<Slot> = ObjectCursor::new(block_layout(1, 1), 1, 0, 0).collect();
        assert_eq!(slots, vec![Slot::Source { sbn: 0, esi: 0 }]);
    }

    #[test]
    fn count_matches_total_for_many_shapes() {
        for (kt, z) in [(1u64, 1u8), (7, 3), (100, 7), (1000, 255), (256, 255)] {
            let layout = block_layout(kt, z);
            let cursor = ObjectCursor::new(layout, z, 3, 2);
            let total = cursor.total();
            assert_eq!(cursor.count() as u64, total, "kt {kt} z {z}");
        }
    }
}
