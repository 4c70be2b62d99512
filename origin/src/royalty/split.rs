//! Collaboration split sheets and the largest-remainder (Hamilton) division behind every split.
//!
//! Dividing an amount by shares almost never comes out even. Largest remainder gives every party
//! the floor of its exact quota, then hands the units left over, one each, to the parties with
//! the largest fractional remainders, so the parts always add up to exactly the whole and no part
//! is more than one unit from its exact quota. Ties are broken by the larger share, then the
//! smaller key (artist id), so the result never depends on input order. A negative amount (a
//! reversal) is divided as its magnitude and negated, so reversing a credit reverses each part
//! exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::booking::Booking;
use super::store::TreeId;

use super::config::BPS_WHOLE;
use super::error::{check_content_id, check_id, invalid, MAX_ARTIST_ID_BYTES};
use super::money::MoneyError;
use super::RoyaltyError;

/// Most parties on one split sheet. Real sheets have a handful; the cap bounds the work per
/// credit.
pub const MAX_SPLIT_PARTIES: usize = 100;

/// One collaborator's share of a content's earnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitShare {
    /// The collaborator's artist id.
    pub artist_id: String,
    /// Share in basis points (1..=10000).
    pub share_bps: u32,
}

/// How every credit for one content id is divided among collaborators. The shares sum to
/// exactly 10000 basis points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSheet {
    /// The content id (or ISRC, for DSP statement lines) the sheet applies to.
    pub content_id: String,
    /// The collaborators and their shares; each artist at most once.
    pub shares: Vec<SplitShare>,
}

impl SplitSheet {
    /// Checks the sheet.
    ///
    /// # Errors
    /// [`RoyaltyError::SplitSum`] unless the shares add up to exactly 10000;
    /// [`RoyaltyError::InvalidInput`] for a malformed content or artist id, an empty sheet, more
    /// than [`MAX_SPLIT_PARTIES`] parties, a zero share, or an artist listed twice.
    pub fn validate(&self) -> Result<(), RoyaltyError> {
        check_content_id("content_id", &self.content_id)?;
        if self.shares.is_empty() || self.shares.len() > MAX_SPLIT_PARTIES {
            return Err(invalid(
                "shares",
                format!("must list 1..={MAX_SPLIT_PARTIES} collaborators"),
            ));
        }
        let mut sum: u64 = 0;
        for (i, share) in self.shares.iter().enumerate() {
            check_id(
                &format!("shares[{i}].artist_id"),
                &share.artist_id,
                MAX_ARTIST_ID_BYTES,
            )?;
            if share.share_bps == 0 {
                return Err(invalid(
                    format!("shares[{i}].share_bps"),
                    "must be at least 1",
                ));
            }
            if self.shares[..i]
                .iter()
                .any(|s| s.artist_id == share.artist_id)
            {
                return Err(invalid(
                    format!("shares[{i}].artist_id"),
                    format!("{:?} is listed twice", share.artist_id),
                ));
            }
            sum += u64::from(share.share_bps);
        }
        if sum != u64::from(BPS_WHOLE) {
            return Err(RoyaltyError::SplitSum {
                content_id: self.content_id.clone(),
                sum,
            });
        }
        Ok(())
    }

    /// Divides `amount` (any unit: minor units or the sub-minor units of play credits) among
    /// the collaborators by largest remainder; the parts, in sheet order, sum to `amount`.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`] if `amount × 10000` does not fit the arithmetic (beyond any
    /// real amount).
    pub fn split(&self, amount: i128) -> Result<Vec<(String, i128)>, MoneyError> {
        let weights: Vec<(&str, u128)> = self
            .shares
            .iter()
            .map(|s| (s.artist_id.as_str(), u128::from(s.share_bps)))
            .collect();
        let parts = largest_remainder(amount, &weights).ok_or(MoneyError::Overflow)?;
        Ok(parts
            .into_iter()
            .map(|(artist, part)| (artist.to_string(), part))
            .collect())
    }
}

/// Divides `total` in proportion to `weights` by largest remainder (Hamilton's method).
///
/// Returns `(key, part)` in input order; the parts sum to exactly `total`, each part is the
/// floor or the ceiling of its exact quota `total × w / Σw`, a zero weight gets zero, and
/// `largest_remainder(-t)` is the negation of `largest_remainder(t)`. Leftover units go to the
/// largest remainders, ties to the larger weight, then the smaller key, then the earlier entry.
///
/// Returns `None` if the weights sum to zero or an intermediate product overflows `u128`.
pub fn largest_remainder<K: Ord + Clone>(
    total: i128,
    weights: &[(K, u128)],
) -> Option<Vec<(K, i128)>> {
    let sum = weights
        .iter()
        .try_fold(0u128, |acc, (_, w)| acc.checked_add(*w))?;
    if sum == 0 {
        return None;
    }
    let magnitude = total.unsigned_abs();
    let mut quotas = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut assigned: u128 = 0;
    for (_, w) in weights {
        let product = magnitude.checked_mul(*w)?;
        quotas.push(product / sum);
        remainders.push(product % sum);
        assigned += product / sum;
    }
    // Each remainder is below `sum`, so fewer than `weights.len()` units are left over.
    let leftover = magnitude - assigned;
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        remainders[b]
            .cmp(&remainders[a])
            .then_with(|| weights[b].1.cmp(&weights[a].1))
            .then_with(|| weights[a].0.cmp(&weights[b].0))
            .then_with(|| a.cmp(&b))
    });
    for &i in order.iter().take(leftover as usize) {
        quotas[i] += 1;
    }
    weights
        .iter()
        .zip(quotas)
        .map(|((key, _), q)| {
            let q = i128::try_from(q).ok()?;
            Some((key.clone(), if total < 0 { -q } else { q }))
        })
        .collect()
}

/// Reads split sheets once per input, seeing the staged state.
#[derive(Debug, Default)]
pub(crate) struct SheetCache(BTreeMap<String, Option<SplitSheet>>);

impl SheetCache {
    /// The sheet of `content_id`, if any.
    pub fn get(
        &mut self,
        b: &Booking<'_>,
        content_id: &str,
    ) -> Result<Option<SplitSheet>, RoyaltyError> {
        if let Some(cached) = self.0.get(content_id) {
            return Ok(cached.clone());
        }
        let sheet: Option<SplitSheet> =
            b.staging_ref().get(TreeId::Splits, content_id.as_bytes())?;
        self.0.insert(content_id.to_string(), sheet.clone());
        Ok(sheet)
    }
}

/// Adds `amount` to `artist`'s total in `totals`, checked.
pub(crate) fn accumulate(
    totals: &mut BTreeMap<String, i128>,
    artist: &str,
    amount: i128,
) -> Result<(), MoneyError> {
    let slot = totals.entry(artist.to_string()).or_insert(0);
    *slot = slot.checked_add(amount).ok_or(MoneyError::Overflow)?;
    Ok(())
}

/// Adds `amount` to `totals`, divided by the content's split sheet when it has one, else all to
/// `artist`.
pub(crate) fn accumulate_split(
    totals: &mut BTreeMap<String, i128>,
    sheet: Option<&SplitSheet>,
    artist: &str,
    amount: i128,
) -> Result<(), MoneyError> {
    match sheet {
        Some(sheet) => {
            for (collaborator, part) in sheet.split(amount)? {
                accumulate(totals, &collaborator, part)?;
            }
            Ok(())
        }
        None => accumulate(totals, artist, amount),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(shares: &[(&str, u32)]) -> SplitSheet {
        super::super::testutil::sheet("song", shares)
    }

    /// Every property the module promises, for one division.
    fn check_division(total: i128, weights: &[(String, u128)]) {
        let parts = largest_remainder(total, weights).unwrap();
        let sum_w: u128 = weights.iter().map(|(_, w)| w).sum();
        assert_eq!(parts.iter().map(|(_, p)| p).sum::<i128>(), total);
        for ((key, w), (k, part)) in weights.iter().zip(&parts) {
            assert_eq!(key, k);
            // |part × Σw − total × w| < Σw: floor or ceiling of the exact quota.
            let exact = total * (*w as i128);
            assert!((part * sum_w as i128 - exact).abs() < sum_w as i128);
            if *w == 0 {
                assert_eq!(*part, 0);
            }
        }
        let negated = largest_remainder(-total, weights).unwrap();
        for ((_, p), (_, n)) in parts.iter().zip(&negated) {
            assert_eq!(*n, -p);
        }
    }

    #[test]
    fn small_examples() {
        let s = sheet(&[("a", 5000), ("b", 5000)]);
        s.validate().unwrap();
        // The odd unit goes to the smaller artist id when shares are equal.
        assert_eq!(s.split(1).unwrap(), vec![("a".into(), 1), ("b".into(), 0)]);
        assert_eq!(
            s.split(-1).unwrap(),
            vec![("a".into(), -1), ("b".into(), 0)]
        );
        let s = sheet(&[("z", 3334), ("y", 3333), ("x", 3333)]);
        // 100 → 33.34 / 33.33 / 33.33: floors 33,33,33; the leftover unit goes to the largest
        // remainder, z.
        assert_eq!(
            s.split(100).unwrap(),
            vec![("z".into(), 34), ("y".into(), 33), ("x".into(), 33)]
        );
        // 2 units over equal-remainder thirds: larger share first, then smaller id.
        assert_eq!(
            s.split(2).unwrap(),
            vec![("z".into(), 1), ("y".into(), 0), ("x".into(), 1)]
        );
        assert_eq!(s.split(0).unwrap().iter().map(|p| p.1).sum::<i128>(), 0);
    }

    #[test]
    fn sheet_validation() {
        assert!(matches!(
            sheet(&[("a", 5000), ("b", 4999)]).validate(),
            Err(RoyaltyError::SplitSum { sum: 9999, .. })
        ));
        assert!(matches!(
            sheet(&[("a", 5000), ("b", 5001)]).validate(),
            Err(RoyaltyError::SplitSum { sum: 10001, .. })
        ));
        assert!(sheet(&[]).validate().is_err());
        assert!(sheet(&[("a", 10000), ("b", 0)]).validate().is_err());
        let err = sheet(&[("a", 5000), ("a", 5000)]).validate().unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let mut s = sheet(&[("a", 10000)]);
        s.content_id = "bad id".into();
        assert!(s.validate().is_err());
        // Overflowing u32 shares cannot wrap the sum into 10000.
        assert!(sheet(&[("a", u32::MAX), ("b", 10001)]).validate().is_err());
    }

    #[test]
    fn exhaustive_two_party_splits_lose_nothing() {
        // Every two-way sheet against every small total, both signs.
        for a in 1..10_000u128 {
            let weights = vec![("a".to_string(), a), ("b".to_string(), 10_000 - a)];
            for total in -25..=25 {
                check_division(total, &weights);
            }
        }
    }

    #[test]
    fn seeded_random_splits_lose_nothing() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_1234);
        for _ in 0..3_000 {
            let parties = rng.usize(1..=12);
            // Random cut points of 10000 give random shares that sum to exactly 10000.
            let mut cuts: Vec<u64> = (0..parties - 1).map(|_| rng.u64(..10_001)).collect();
            cuts.sort_unstable();
            let mut shares = Vec::new();
            let mut prev = 0;
            for (i, cut) in cuts.iter().chain(std::iter::once(&10_000)).enumerate() {
                shares.push((
                    format!("artist-{}", rng.u64(..1000) * 100 + i as u64),
                    (cut - prev) as u128,
                ));
                prev = *cut;
            }
            let total = match rng.u64(..3) {
                0 => rng.u64(..100) as i128 - 50,
                1 => rng.u64(..1_000_000_000) as i128 - 500_000_000,
                _ => (rng.u64(..) >> 2) as i128 * if rng.bool() { 1 } else { -1 },
            };
            check_division(total, &shares);

            // Input order does not matter.
            let parts = largest_remainder(total, &shares).unwrap();
            let mut shuffled = shares.clone();
            rng.shuffle(&mut shuffled);
            let mut again = largest_remainder(total, &shuffled).unwrap();
            let mut sorted = parts.clone();
            sorted.sort();
            again.sort();
            assert_eq!(sorted, again);
        }
    }

    #[test]
    fn arbitrary_weights_such_as_seconds_watched() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..1_000 {
            let n = rng.usize(1..=20);
            let weights: Vec<(String, u128)> = (0..n)
                .map(|i| (format!("c{i}"), u128::from(rng.u64(..5_000_000))))
                .collect();
            if weights.iter().all(|(_, w)| *w == 0) {
                assert!(largest_remainder(5, &weights).is_none());
                continue;
            }
            check_division(rng.u64(..100_000) as i128 - 50_000, &weights);
        }
    }

    #[test]
    fn degenerate_inputs() {
        assert!(largest_remainder::<&str>(10, &[]).is_none());
        assert!(largest_remainder(10, &[("a", 0)]).is_none());
        assert!(largest_remainder(i128::MAX, &[("a", u128::MAX)]).is_none());
        assert_eq!(largest_remainder(7, &[("a", 1)]).unwrap(), vec![("a", 7)]);
    }
}
