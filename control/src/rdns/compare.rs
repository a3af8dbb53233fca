//! The full compare: what a zone holds (its transfer) against what the control wants, as the
//! changes that make the zone right. Only owners the control manages are touched: the pool
//! addresses in the zone, and IPv6 addresses inside the rental pools; any other record of the
//! zone (the provider's own) is left as it is.

use super::update::Change;
use hickory_proto::rr::Name;
use std::collections::BTreeMap;

/// The changes that turn `have` into `want` for the managed owners. `want` maps each managed
/// owner that should have a PTR to its target, or to None for one that should have none;
/// `managed` says whether an owner present in the zone but absent from `want` is the
/// control's (then its PTRs are deleted).
pub fn diff(
    want: &BTreeMap<Name, Option<Name>>,
    have: &BTreeMap<Name, Vec<Name>>,
    managed: impl Fn(&Name) -> bool,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (owner, target) in want {
        let has = have.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        let right = match target {
            Some(t) => has.len() == 1 && &has[0] == t,
            None => has.is_empty(),
        };
        if !right {
            out.push(Change {
                owner: owner.clone(),
                target: target.clone(),
            });
        }
    }
    for (owner, targets) in have {
        if !targets.is_empty() && !want.contains_key(owner) && managed(owner) {
            out.push(Change {
                owner: owner.clone(),
                target: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn repairs_missing_wrong_doubled_and_stale_records_only() {
        let want: BTreeMap<Name, Option<Name>> = [
            (n("8.z."), Some(n("a.example."))),
            (n("9.z."), Some(n("b.example."))),
            (n("10.z."), Some(n("c.example."))),
            (n("11.z."), Some(n("d.example."))),
            (n("12.z."), None),
        ]
        .into();
        let have: BTreeMap<Name, Vec<Name>> = [
            (n("8.z."), vec![n("a.example.")]),                   // right
            (n("9.z."), vec![n("old.example.")]),                 // wrong
            (n("10.z."), vec![n("c.example."), n("x.example.")]), // doubled
            (n("12.z."), vec![n("gone.example.")]),               // should have none
            (n("1.x.ip6.z."), vec![n("stale.example.")]),         // managed, not wanted
            (n("gw.z."), vec![n("router.example.")]),             // the provider's own
        ]
        .into();
        let changes = diff(&want, &have, |o| o.to_ascii().contains("ip6"));
        let owners: Vec<String> = changes.iter().map(|c| c.owner.to_ascii()).collect();
        assert_eq!(owners, ["10.z.", "11.z.", "12.z.", "9.z.", "1.x.ip6.z."]);
        assert_eq!(changes[1].target, Some(n("d.example.")));
        assert_eq!(changes[2].target, None);
        assert!(diff(&want, &have, |_| false).len() == 4);
        // Once applied, nothing is left to do.
        let fixed: BTreeMap<Name, Vec<Name>> = want
            .iter()
            .filter_map(|(o, t)| t.clone().map(|t| (o.clone(), vec![t])))
            .collect();
        assert!(diff(&want, &fixed, |_| true).is_empty());
    }
}
