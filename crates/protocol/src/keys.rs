//! Actor keys: an actor is addressed by (namespace, name, key), a key being a list of strings.
//!
//! Two textual forms exist on the wire:
//! - the REST form (`PUT /actors` bodies, actor records): components joined with `/`, where a
//!   component escapes `\` as `\\` and `/` as `\/`, an empty component is `\0`, and the empty
//!   key is `/`;
//! - the query-gateway form (`rvt-key`): components joined with `,`, unescaped; missing or empty
//!   means the empty key (so a single empty component cannot be expressed there).

/// Key of an actor.
pub type Key = Vec<String>;

pub fn to_rest(key: &[String]) -> String {
    if key.is_empty() {
        return "/".into();
    }
    key.iter()
        .map(|part| if part.is_empty() { "\\0".to_string() } else { part.replace('\\', "\\\\").replace('/', "\\/") })
        .collect::<Vec<_>>()
        .join("/")
}

pub fn from_rest(text: &str) -> Key {
    if text == "/" {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // `\0` alone is the empty component.
                Some('0') if current.is_empty() && matches!(chars.peek(), None | Some('/')) => {}
                Some(other) => current.push(other),
                None => current.push('\\'),
            },
            '/' => parts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    parts.push(current);
    parts
}

pub fn from_query(value: Option<&str>) -> Key {
    match value {
        None | Some("") => Vec::new(),
        Some(v) => v.split(',').map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_form_round_trips() {
        for key in [
            vec![],
            vec!["my-agent".to_string()],
            vec!["a/b".into(), "c".into()],
            vec!["".into()],
            vec!["x\\y".into(), "".into()],
        ] {
            assert_eq!(from_rest(&to_rest(&key)), key, "{key:?} -> {}", to_rest(&key));
        }
        assert_eq!(to_rest(&["a/b".to_string(), "c".to_string()]), "a\\/b/c");
        assert_eq!(to_rest(&[]), "/");
    }

    #[test]
    fn query_form() {
        assert_eq!(from_query(Some("a/b,c")), ["a/b", "c"]);
        assert!(from_query(Some("")).is_empty());
        assert!(from_query(None).is_empty());
    }
}
