//! The duplicate-key check of the review fast path: one pass over the bytes that finds an object
//! naming a key twice without decoding anything. serde's derived structs refuse a repeated known
//! field, but a map, an ignored field and a raw object take the last copy silently, where the
//! tree-based parser refuses the body; this scan keeps the two paths in agreement. It runs on
//! every review, so strings (most of a review's bytes) are crossed eight bytes at a time and keys
//! are compared by their first eight bytes before their text.

/// Objects with up to this many keys are checked for a repeated key as each key is read; larger
/// ones (label maps, `managedFields`) are sorted once when they close, so no body costs more
/// than `n log n` comparisons.
const LINEAR_KEYS: usize = 32;

/// Nesting deeper than serde_json decodes (its recursion limit is 128) is left to it to refuse.
const MAX_DEPTH: usize = 128;

/// Whether no JSON object in `body` names a key twice, found in one pass over the bytes without
/// decoding anything. Only meaningful for valid JSON (the typed decode that follows checks that):
/// it reads keys where the grammar puts them and skips every other token. `false` also for what
/// it does not try to judge, a key with an escape sequence (`"a"` and `"\u0061"` are the same
/// key) or nesting past [`MAX_DEPTH`]: such bodies take the tree-based parser, which words the
/// error.
pub fn keys_are_unique(body: &[u8]) -> bool {
    /// An open array, or an open object: its first key's index in `keys`, and one bit per key
    /// read so far (a hash of it), so a new key is compared with its siblings only when its bit
    /// is already set.
    #[derive(Clone, Copy)]
    enum Open {
        Array,
        Object { first: usize, seen: u64 },
    }
    let mut keys: Vec<KeyText<'_>> = Vec::with_capacity(64);
    let mut open: Vec<Open> = Vec::with_capacity(16);
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&byte) = body.get(i) {
        i += 1;
        match byte {
            b'"' => {
                let Some((end, escaped)) = string_end(body, i) else {
                    return false;
                };
                let start = i;
                i = end + 1;
                if !expect_key {
                    continue;
                }
                expect_key = false;
                let Some(Open::Object { first, seen }) = open.last_mut() else {
                    return false;
                };
                if escaped {
                    return false;
                }
                let key = KeyText::new(body, start, end);
                let bit = key.bit();
                let siblings = &keys[*first..];
                if *seen & bit != 0 && siblings.len() < LINEAR_KEYS && siblings.contains(&key) {
                    return false;
                }
                *seen |= bit;
                keys.push(key);
            }
            b'{' | b'[' if open.len() >= MAX_DEPTH => return false,
            b'{' => {
                let first = keys.len();
                open.push(Open::Object { first, seen: 0 });
                expect_key = true;
            }
            b'[' => {
                open.push(Open::Array);
                expect_key = false;
            }
            b'}' | b']' => {
                expect_key = false;
                match open.pop() {
                    Some(Open::Object { first, .. }) => {
                        let siblings = &mut keys[first..];
                        if siblings.len() > LINEAR_KEYS {
                            siblings.sort_unstable();
                            if siblings.windows(2).any(|pair| pair[0] == pair[1]) {
                                return false;
                            }
                        }
                        keys.truncate(first);
                    }
                    Some(Open::Array) => {}
                    None => return false,
                }
            }
            b',' => expect_key = matches!(open.last(), Some(Open::Object { .. })),
            _ => {}
        }
    }
    open.is_empty()
}

/// A key as it appears in the body, with its first eight bytes as one number, so that telling
/// two different keys apart is one comparison in almost every case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct KeyText<'a> {
    head: u64,
    text: &'a [u8],
}

impl<'a> KeyText<'a> {
    /// The key `body[start..end]`.
    fn new(body: &'a [u8], start: usize, end: usize) -> Self {
        let text = &body[start..end];
        let head = match body.get(start..).and_then(<[u8]>::first_chunk::<8>) {
            // Eight bytes from the start, less those past the key's end.
            Some(word) if text.len() < 8 => {
                u64::from_le_bytes(*word) & ((1 << (8 * text.len())) - 1)
            }
            Some(word) => u64::from_le_bytes(*word),
            None => {
                let mut head = [0u8; 8];
                head[..text.len()].copy_from_slice(text);
                u64::from_le_bytes(head)
            }
        };
        KeyText { head, text }
    }

    /// One of 64 bits, from the key's head and length: equal keys share it.
    fn bit(&self) -> u64 {
        let mixed = (self.head ^ self.text.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        1 << (mixed >> 58)
    }
}

/// Where the string whose text starts at `start` ends (the index of its closing quote), and
/// whether it holds an escape; `None` if it never ends. Strings are crossed eight bytes at a time
/// while eight are left in the body.
fn string_end(body: &[u8], start: usize) -> Option<(usize, bool)> {
    let (mut i, mut escaped) = (start, false);
    loop {
        match body.get(i..).and_then(<[u8]>::first_chunk::<8>) {
            Some(word) => {
                let found = quote_or_backslash(u64::from_le_bytes(*word));
                if found == 0 {
                    i += 8;
                    continue;
                }
                i += (found.trailing_zeros() / 8) as usize;
            }
            None => {
                i += body
                    .get(i..)?
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\')?
            }
        }
        if body[i] == b'"' {
            return Some((i, escaped));
        }
        escaped = true;
        i += 2; // the backslash and the character it escapes
    }
}

/// The high bit of each byte of `word` (read little-endian) that is a `"` or a `\`, and perhaps
/// of bytes after the first such one (the subtraction borrows), never before it: the lowest set
/// bit is exact.
fn quote_or_backslash(word: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let equal = |byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    equal(b'"') | equal(b'\\')
}

#[cfg(test)]
mod tests {
    use super::super::review::json_without_duplicate_keys;
    use super::*;

    #[test]
    fn the_key_scan_finds_repeats_at_any_depth_and_only_there() {
        let unique = [
            r#"{"a":1,"b":{"a":2,"b":[{"a":3},{"a":4}]},"c":"{\"a\":1,\"a\":2}"}"#,
            r#"[{"a":1},{"a":1}]"#,
            r#"{"a":"}","b":"\\","c":[],"d":{}}"#,
            r#"{}"#,
            r#""a""#,
        ];
        for body in unique {
            assert!(keys_are_unique(body.as_bytes()), "{body}");
        }
        let many: Vec<String> = (0..100).map(|k| format!(r#""k{k}":{k}"#)).collect();
        assert!(keys_are_unique(
            format!("{{{}}}", many.join(",")).as_bytes()
        ));
        let refused = [
            r#"{"a":1,"a":2}"#.to_owned(),
            r#"{"x":{"b":[{"a":1,"c":{"d":1,"d":1}}]}}"#.to_owned(),
            r#"[1,{"a":{},"a":[]}]"#.to_owned(),
            // After the linear limit, found when the object closes.
            format!(r#"{{{},"k7":0}}"#, many.join(",")),
            // Escaped keys are left to the tree-based parser.
            r#"{"\u0061":1}"#.to_owned(),
            // Unbalanced or unterminated text.
            r#"{"a":1"#.to_owned(),
            r#"{"a":1}}"#.to_owned(),
            r#"{"a"#.to_owned(),
            format!(
                "{}1{}",
                "[".repeat(MAX_DEPTH + 1),
                "]".repeat(MAX_DEPTH + 1)
            ),
        ];
        for body in refused {
            assert!(!keys_are_unique(body.as_bytes()), "{body}");
        }
    }

    /// A JSON tree whose objects may repeat keys (drawn from few names), written out by hand.
    #[derive(Clone, Debug)]
    enum Json {
        Leaf(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        fn write(&self, out: &mut String) {
            match self {
                Json::Leaf(text) => out.push_str(text),
                Json::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        out.push_str(if i == 0 { "" } else { "," });
                        item.write(out);
                    }
                    out.push(']');
                }
                Json::Object(members) => {
                    out.push('{');
                    for (i, (key, value)) in members.iter().enumerate() {
                        out.push_str(if i == 0 { "" } else { " , " });
                        out.push_str(&serde_json::to_string(key).unwrap());
                        out.push_str(" : ");
                        value.write(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Json> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            // Strings full of structure: braces, quotes, backslashes, commas, colons.
            "[a-c{}\\[\\]\":,\\\\ ]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ]
        .prop_map(Json::Leaf);
        leaf.prop_recursive(6, 96, 40, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                // Few names, so repeats are common; sometimes past the linear limit.
                // Also names of eight bytes and more that share their first eight, so keys are
                // told apart past the number the scan compares first.
                proptest::collection::vec(("(contactGr)?[a-e]{1,2}", inner.clone()), 0..6)
                    .prop_map(Json::Object),
                proptest::collection::vec(("[a-z]{1,2}", inner), 30..40).prop_map(Json::Object),
            ]
        })
    }

    proptest::proptest! {
        /// The scan agrees with the tree-based parser on every JSON text whose keys need no
        /// escapes.
        #[test]
        fn the_key_scan_agrees_with_the_tree(tree in json()) {
            let mut text = String::new();
            tree.write(&mut text);
            let tree_says = json_without_duplicate_keys(text.as_bytes()).is_ok();
            proptest::prop_assert_eq!(keys_are_unique(text.as_bytes()), tree_says, "{}", text);
        }
    }
}
