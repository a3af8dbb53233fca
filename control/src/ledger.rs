//! Billing arithmetic, pure. A rental is a ledger of credited seconds: paid-until = start +
//! credited seconds, whatever paid for them. Everything else follows from that and the clock.

use staticwire_api::RentalState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub activation_sat: u64,
    pub monthly_sat: u64,
    pub month_secs: i64,
    pub reservation_secs: i64,
    pub cooldown_secs: i64,
    pub max_months: u32,
}

/// What the ledger knows of one rental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    pub started_at: Option<i64>,
    pub credited_secs: i64,
    pub suspended: bool,
    pub released: bool,
}

impl Account {
    pub fn paid_until(&self) -> Option<i64> {
        self.started_at.map(|s| s + self.credited_secs)
    }

    pub fn state(&self, terms: &Terms, now: i64) -> RentalState {
        if self.released {
            return RentalState::Released;
        }
        let Some(paid_until) = self.paid_until() else {
            return RentalState::Pending;
        };
        if now >= paid_until + terms.reservation_secs {
            RentalState::Released
        } else if self.suspended {
            RentalState::Suspended
        } else if now < paid_until {
            RentalState::Active
        } else {
            RentalState::Lapsed
        }
    }

    /// Whole months of back payments needed before paid-until is in the future again.
    pub fn months_owed(&self, terms: &Terms, now: i64) -> u32 {
        match self.paid_until() {
            Some(p) if now >= p => ((now - p) / terms.month_secs + 1) as u32,
            _ => 0,
        }
    }

    /// End of the reservation, for a rental that has started.
    pub fn reserved_until(&self, terms: &Terms) -> Option<i64> {
        self.paid_until().map(|p| p + terms.reservation_secs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    #[error("months must be between 1 and {0}")]
    BadMonths(u32),
    #[error("the rental is not paid for yet: pay its first invoice")]
    NotStarted,
    #[error("the rental was released: rent a new address")]
    Released,
}

/// Amount and months an invoice must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub amount_sat: u64,
    /// Months of rent credited on payment.
    pub months: u32,
}

pub fn activation_quote(terms: &Terms) -> Quote {
    Quote {
        amount_sat: terms.activation_sat + terms.monthly_sat,
        months: 1,
    }
}

/// A renewal of `months` months, plus the months a lapsed rental owes.
pub fn renewal_quote(
    terms: &Terms,
    account: &Account,
    months: u32,
    now: i64,
) -> Result<Quote, RenewError> {
    if months == 0 || months > terms.max_months {
        return Err(RenewError::BadMonths(terms.max_months));
    }
    match account.state(terms, now) {
        RentalState::Pending => return Err(RenewError::NotStarted),
        RentalState::Released => return Err(RenewError::Released),
        _ => {}
    }
    let total = months + account.months_owed(terms, now);
    Ok(Quote {
        amount_sat: terms.monthly_sat * u64::from(total),
        months: total,
    })
}

/// What a customer must pay now to have service: 0 while active, one month plus back payments
/// while lapsed.
pub fn amount_due(terms: &Terms, account: &Account, now: i64) -> u64 {
    match account.state(terms, now) {
        RentalState::Lapsed | RentalState::Suspended if account.months_owed(terms, now) > 0 => {
            terms.monthly_sat * u64::from(account.months_owed(terms, now) + 1)
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T: Terms = Terms {
        activation_sat: 48_000,
        monthly_sat: 24_000,
        month_secs: 30 * DAY,
        reservation_secs: 60 * DAY,
        cooldown_secs: 7 * DAY,
        max_months: 12,
    };

    fn started(at: i64, months: i64) -> Account {
        Account {
            started_at: Some(at),
            credited_secs: months * T.month_secs,
            ..Account::default()
        }
    }

    #[test]
    fn activation_is_fee_plus_first_month() {
        assert_eq!(
            activation_quote(&T),
            Quote {
                amount_sat: 72_000,
                months: 1
            }
        );
        let a = Account::default();
        assert_eq!(a.state(&T, 0), RentalState::Pending);
        assert_eq!(a.paid_until(), None);
    }

    #[test]
    fn renewals_of_one_to_twelve_months() {
        let a = started(1_000, 1);
        for m in 1..=12u32 {
            let q = renewal_quote(&T, &a, m, 1_000 + DAY).unwrap();
            assert_eq!(
                q,
                Quote {
                    amount_sat: 24_000 * u64::from(m),
                    months: m
                }
            );
        }
        assert_eq!(
            renewal_quote(&T, &a, 0, 1_000),
            Err(RenewError::BadMonths(12))
        );
        assert_eq!(
            renewal_quote(&T, &a, 13, 1_000),
            Err(RenewError::BadMonths(12))
        );
        assert_eq!(
            renewal_quote(&T, &a, 1000, 1_000),
            Err(RenewError::BadMonths(12))
        );
    }

    #[test]
    fn lapse_reservation_and_release() {
        let a = started(0, 1);
        let paid_until = 30 * DAY;
        assert_eq!(a.state(&T, paid_until - 1), RentalState::Active);
        assert_eq!(a.state(&T, paid_until), RentalState::Lapsed);
        assert_eq!(a.state(&T, paid_until + 60 * DAY - 1), RentalState::Lapsed);
        assert_eq!(a.state(&T, paid_until + 60 * DAY), RentalState::Released);
        assert_eq!(a.reserved_until(&T), Some(paid_until + 60 * DAY));
        assert_eq!(amount_due(&T, &a, paid_until - 1), 0);
    }

    #[test]
    fn back_payments_bring_paid_until_into_the_future() {
        let a = started(0, 1);
        let paid_until = 30 * DAY;
        // Ten days late: one month owed, so renewing one month costs two.
        let now = paid_until + 10 * DAY;
        assert_eq!(a.months_owed(&T, now), 1);
        assert_eq!(amount_due(&T, &a, now), 48_000);
        let q = renewal_quote(&T, &a, 1, now).unwrap();
        assert_eq!(
            q,
            Quote {
                amount_sat: 48_000,
                months: 2
            }
        );
        let after = Account {
            credited_secs: a.credited_secs + i64::from(q.months) * T.month_secs,
            ..a
        };
        assert!(after.paid_until().unwrap() > now);
        assert_eq!(after.state(&T, now), RentalState::Active);
        // Exactly at paid-until one month is owed; 45 days late, two.
        assert_eq!(a.months_owed(&T, paid_until), 1);
        assert_eq!(a.months_owed(&T, paid_until + 45 * DAY), 2);
        assert_eq!(
            renewal_quote(&T, &a, 3, paid_until + 45 * DAY)
                .unwrap()
                .months,
            5
        );
    }

    #[test]
    fn renewal_refused_before_start_and_after_release() {
        assert_eq!(
            renewal_quote(&T, &Account::default(), 1, 0),
            Err(RenewError::NotStarted)
        );
        let a = started(0, 1);
        assert_eq!(
            renewal_quote(&T, &a, 1, 90 * DAY),
            Err(RenewError::Released)
        );
        let r = Account {
            released: true,
            ..started(0, 12)
        };
        assert_eq!(renewal_quote(&T, &r, 1, DAY), Err(RenewError::Released));
    }

    #[test]
    fn suspended_rentals_keep_their_ledger() {
        let a = Account {
            suspended: true,
            ..started(0, 2)
        };
        assert_eq!(a.state(&T, DAY), RentalState::Suspended);
        assert!(renewal_quote(&T, &a, 1, DAY).is_ok());
        assert_eq!(a.state(&T, 60 * DAY + 60 * DAY), RentalState::Released);
    }
}
