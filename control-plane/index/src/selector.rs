//! Kubernetes label selectors: `matchLabels` and `matchExpressions`.

use std::collections::BTreeMap;

use vigil_crds::LabelSelector;

/// Does `selector` select an object with `labels`? An empty selector selects everything;
/// an unknown operator selects nothing (fail closed).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .as_ref()
        .is_none_or(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let by_expressions = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use vigil_crds::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn selectors() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        assert!(matches(&LabelSelector::default(), &l));
        let s = |ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        };
        assert!(matches(&s(&[("app", "web")], vec![]), &l));
        assert!(!matches(&s(&[("app", "db")], vec![]), &l));
        assert!(matches(
            &s(&[], vec![expr("tier", "In", &["front", "back"])]),
            &l
        ));
        assert!(!matches(
            &s(&[], vec![expr("tier", "NotIn", &["front"])]),
            &l
        ));
        assert!(matches(&s(&[], vec![expr("zone", "NotIn", &["a"])]), &l));
        assert!(matches(&s(&[], vec![expr("app", "Exists", &[])]), &l));
        assert!(matches(
            &s(&[], vec![expr("zone", "DoesNotExist", &[])]),
            &l
        ));
        assert!(
            !matches(&s(&[], vec![expr("app", "Bogus", &[])]), &l),
            "unknown operators select nothing"
        );
        assert!(
            !matches(
                &s(&[("app", "web")], vec![expr("tier", "In", &["back"])]),
                &l
            ),
            "all terms must hold"
        );
    }
}
