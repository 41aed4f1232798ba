//! Label selectors as the API server reads them: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
//! `a in (x,y)`, `a notin (x,y)`, comma-separated and all required.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Term>);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(values: &str) -> Option<Vec<String>> {
    let inner = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for raw in split_terms(s) {
            let t = raw.trim();
            if t.is_empty() {
                continue;
            }
            let term = if let Some((k, v)) = t.split_once("!=") {
                Term::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once("==") {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once('=') {
                Term::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Term::NotIn(k.trim().into(), set(v).ok_or(format!("bad set in {t:?}"))?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Term::In(k.trim().into(), set(v).ok_or(format!("bad set in {t:?}"))?)
            } else if let Some(k) = t.strip_prefix('!') {
                Term::NotExists(k.trim().into())
            } else {
                Term::Exists(t.into())
            };
            terms.push(term);
        }
        Ok(Selector(terms))
    }

    /// Whether an object's `metadata.labels` satisfy every term.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|term| match term {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::NotEq(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::NotExists(k) => get(k).is_none(),
            Term::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Term::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }
}

/// Field selectors: only the fields clients here use.
pub fn field_matches(selector: &str, object: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .all(|term| {
            let (key, want, negate) = match term.split_once("!=") {
                Some((k, v)) => (k, v, true),
                None => match term.split_once('=') {
                    Some((k, v)) => (k, v.trim_start_matches('='), false),
                    None => return false,
                },
            };
            let path: Vec<&str> = key.trim().split('.').collect();
            let mut cursor = object;
            for part in &path {
                cursor = &cursor[*part];
            }
            let equal = cursor.as_str() == Some(want.trim());
            equal != negate
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "tier": "a"}}, "status": {"phase": "Running"}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier=a", true),
            ("app=db", false),
            ("app!=db", true),
            ("app", true),
            ("!app", false),
            ("tier in (a,b)", true),
            ("tier notin (a,b)", false),
            ("missing notin (a)", true),
            ("", true),
        ] {
            assert_eq!(Selector::parse(sel).unwrap().matches(&pod), want, "{sel}");
        }
        assert!(field_matches("metadata.name=p", &pod));
        assert!(field_matches("status.phase!=Pending", &pod));
        assert!(!field_matches("metadata.name=q", &pod));
    }
}
