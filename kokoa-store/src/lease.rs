//! Fenced leases: who leads the control planes, and the leader-only actions they record.
//!
//! A lease is held until a time of the *store's* clock (the database's, for the SQL
//! backends), so control planes with skewed clocks still agree on when it ends. Each new
//! term gets the next fencing token. A leader records every side effect (a DNS change, a
//! VPS created or destroyed, a certificate ordered) as an [`Intent`] under its [`Fence`];
//! the store refuses the record once the term is over, so a leader that stalled past its
//! lease cannot act after its successor has started.
//!
//! The rules live here once, as pure functions over [`LeaseRow`]; each backend only loads
//! the row, reads its clock and stores the result.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use kokoa_core::{Error, Timestamp};

/// A term of a named lease: returned by [`Store::lease_acquire`](super::Store::lease_acquire)
/// when it is granted, and by [`Store::lease_holder`](super::Store::lease_holder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease's name, e.g. `leader`.
    pub name: String,
    /// Who holds it, e.g. the control plane's instance name.
    pub holder: String,
    /// The fencing token of this term: larger than that of every earlier term of the lease.
    pub token: u64,
    /// How long the term has left, by the store's clock when it answered (for a grant, the
    /// TTL asked for). Time spent since, e.g. in the network, is not taken off: a holder
    /// should renew well before this runs out.
    pub expires_in: Duration,
    /// Whether this grant started the term (the holder did not hold the lease just before),
    /// as opposed to renewing it. A new leader should reload what an earlier one may have
    /// changed.
    pub new_term: bool,
}

impl Lease {
    /// The fence that [`Store::record_intent`](super::Store::record_intent) checks for this
    /// term.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.name.clone(),
            holder: self.holder.clone(),
            token: self.token,
        }
    }
}

/// Proof of leadership a leader-only action is taken under: the term of a lease it was
/// granted. See [`Lease::fence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name.
    pub lease: String,
    /// The holder the term was granted to.
    pub holder: String,
    /// The term's fencing token.
    pub token: u64,
}

/// A leader-only action about to be taken, for
/// [`Store::record_intent`](super::Store::record_intent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    /// What is done: `dns.apply`, `vps.create`, `vps.destroy`, `acme.order`, ...
    pub kind: String,
    /// What it is done to, e.g. an edge id or a zone name.
    pub subject: String,
    /// Anything else worth keeping about it, e.g. the records to be written.
    pub detail: serde_json::Value,
}

/// A leader-only action as recorded: numbered in the order the store received it, under
/// the term it was allowed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Its number, larger than that of every intent recorded before (also pruned ones).
    pub id: i64,
    /// The lease whose term allowed it.
    pub lease: String,
    /// The fencing token of that term.
    pub token: u64,
    /// The holder of that term.
    pub holder: String,
    /// What is done, e.g. `vps.create`.
    pub kind: String,
    /// What it is done to.
    pub subject: String,
    /// Anything else recorded about it.
    pub detail: serde_json::Value,
    /// When it was recorded, by the store's clock.
    pub created_at: Timestamp,
}

/// A lease as the backends keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeaseRow {
    /// `None` once released.
    pub(super) holder: Option<String>,
    /// The token of the latest term, 0 before the first; it never goes down, so no token
    /// is given out twice.
    pub(super) token: u64,
    /// End of the latest term, in Unix milliseconds of the store's clock.
    pub(super) expires_at_ms: i64,
}

impl LeaseRow {
    /// A lease never granted.
    pub(super) const NEW: Self = Self {
        holder: None,
        token: 0,
        expires_at_ms: 0,
    };

    /// The holder of the current term, if one is running at `now_ms`.
    fn holder_at(&self, now_ms: i64) -> Option<&str> {
        self.holder
            .as_deref()
            .filter(|_| now_ms < self.expires_at_ms)
    }

    /// The lease as seen at `now_ms`, if someone holds it.
    pub(super) fn lease(&self, name: &str, now_ms: i64, new_term: bool) -> Option<Lease> {
        Some(Lease {
            name: name.to_owned(),
            holder: self.holder_at(now_ms)?.to_owned(),
            token: self.token,
            expires_in: Duration::from_millis(
                self.expires_at_ms.saturating_sub(now_ms).unsigned_abs(),
            ),
            new_term,
        })
    }
}

/// What [`Store::lease_acquire`](super::Store::lease_acquire) does to lease `name`, which is
/// `row` at `now_ms`: the row to store and the grant, or `None` while another holder's term
/// runs. The current holder renews its term and keeps its token; anyone else (the same
/// holder too, once its term has run out) starts a new term with the next token.
pub(super) fn grant(
    name: &str,
    row: &LeaseRow,
    holder: &str,
    now_ms: i64,
    ttl: Duration,
) -> Option<(LeaseRow, Lease)> {
    let new_term = match row.holder_at(now_ms) {
        Some(current) if current == holder => false,
        Some(_) => return None,
        None => true,
    };
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let granted = LeaseRow {
        holder: Some(holder.to_owned()),
        token: row.token + u64::from(new_term),
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    };
    let lease = Lease {
        name: name.to_owned(),
        holder: holder.to_owned(),
        token: granted.token,
        expires_in: Duration::from_millis(ttl_ms.unsigned_abs()),
        new_term,
    };
    Some((granted, lease))
}

/// What [`Store::lease_release`](super::Store::lease_release) leaves of `row` at `now_ms`:
/// the term ended now, the token kept; `None` if `holder` does not hold the lease.
pub(super) fn release(row: &LeaseRow, holder: &str, now_ms: i64) -> Option<LeaseRow> {
    (row.holder_at(now_ms) == Some(holder)).then_some(LeaseRow {
        holder: None,
        token: row.token,
        expires_at_ms: now_ms,
    })
}

/// Whether `fence` is the term of its lease running at `now_ms` (`row` is `None` for a
/// lease never granted); [`Error::Fenced`] if not.
pub(super) fn check_fence(fence: &Fence, row: Option<&LeaseRow>, now_ms: i64) -> Result<(), Error> {
    let row = row.unwrap_or(&LeaseRow::NEW);
    let running = row.holder_at(now_ms);
    let current = running.map(|_| row.token);
    if running == Some(fence.holder.as_str()) && current == Some(fence.token) {
        Ok(())
    } else {
        Err(Error::Fenced {
            lease: fence.lease.clone(),
            token: fence.token,
            current,
        })
    }
}

/// A time of the store's clock in Unix milliseconds, as a [`Timestamp`] (whole seconds,
/// rounded down).
pub(super) fn timestamp(ms: i64) -> Result<Timestamp, Error> {
    Timestamp::from_unix(ms.div_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn terms_and_tokens() {
        let (row, first) = grant("leader", &LeaseRow::NEW, "a", 1_000, TTL).expect("free");
        assert_eq!(
            (first.token, first.new_term, first.expires_in),
            (1, true, TTL)
        );
        assert_eq!(row.expires_at_ms, 11_000);

        assert_eq!(
            grant("leader", &row, "b", 10_999, TTL),
            None,
            "a's term runs"
        );
        let (row, renewed) = grant("leader", &row, "a", 10_999, TTL).expect("renewal");
        assert_eq!((renewed.token, renewed.new_term), (1, false));

        let (expired, _) = grant("leader", &row, "a", 30_000, TTL).expect("a again");
        assert_eq!(expired.token, 2, "a term that ran out is not renewed");
        let (row, taken) = grant("leader", &row, "b", 20_999, TTL).expect("expired");
        assert_eq!((taken.token, taken.new_term), (2, true));

        assert_eq!(release(&row, "a", 21_000), None, "not a's");
        let released = release(&row, "b", 21_000).expect("b's");
        assert_eq!(released.lease("leader", 21_000, false), None);
        let (_, next) = grant("leader", &released, "b", 21_000, TTL).expect("free");
        assert_eq!((next.token, next.new_term), (3, true));
    }

    #[test]
    fn fences() {
        let (row, lease) = grant("leader", &LeaseRow::NEW, "a", 0, TTL).expect("free");
        let fence = lease.fence();
        assert!(check_fence(&fence, Some(&row), 9_999).is_ok());
        let over = check_fence(&fence, Some(&row), 10_000).expect_err("expired");
        assert!(over.is_fenced());
        assert_eq!(
            over.to_string(),
            "lease \"leader\" term 1 is over (nobody holds it now): this control plane no \
             longer leads; the action was refused"
        );
        let (row, _) = grant("leader", &row, "b", 10_000, TTL).expect("expired");
        assert_eq!(
            check_fence(&fence, Some(&row), 10_001)
                .expect_err("taken over")
                .to_string(),
            "lease \"leader\" term 1 is over (now term 2): this control plane no longer \
             leads; the action was refused"
        );
        let forged = Fence {
            holder: "a".to_owned(),
            ..row.lease("leader", 10_001, false).expect("held").fence()
        };
        assert!(
            check_fence(&forged, Some(&row), 10_001).is_err(),
            "b's term"
        );
        assert!(matches!(
            check_fence(&fence, None, 0),
            Err(Error::Fenced { current: None, .. })
        ));
    }

    #[test]
    fn timestamps_round_down() {
        assert_eq!(timestamp(1_999).map(Timestamp::as_unix).ok(), Some(1));
        assert_eq!(timestamp(-1).map(Timestamp::as_unix).ok(), Some(-1));
    }
}
