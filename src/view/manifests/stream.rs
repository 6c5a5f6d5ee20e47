//! Reading manifest files one object at a time, whatever their size: the items of a `kind: List`
//! are handed over while the `items` array is parsed (a `DeserializeSeed` over the document, not a
//! `Value` of it), JSON streams and YAML streams one document at a time, YAML straight from the
//! file without reading it whole. So loading a `kubectl get -o json` or `-o yaml` dump of 200,000
//! objects never holds more than one of them as a tree.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::LoadError;

/// What the callback is told for each object: its 1-based document number and the object (a list
/// item, or a whole document that is not a list).
pub type OnObject<'a> = dyn FnMut(usize, Value) -> Result<(), LoadError> + 'a;

/// Reads `path` (JSON when it ends in `.json`, YAML otherwise) and calls `on_object` for every
/// object in it, in order. The first error stops the reading.
pub fn for_each_object(path: &Path, on_object: &mut OnObject<'_>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let mut document = 0;
    loop {
        document += 1;
        let mut failure = None;
        let seed = DocumentSeed {
            document,
            on_object: &mut *on_object,
            failure: &mut failure,
        };
        let parsed = if json {
            if !skip_whitespace(&mut reader).map_err(io)? {
                return Ok(());
            }
            // A fresh deserializer per document over the shared buffer: an object or array
            // document is read up to its closing bracket and not a byte further.
            let mut deserializer = serde_json::Deserializer::from_reader(&mut reader);
            seed.deserialize(&mut deserializer)
                .map_err(|e| e.to_string())
        } else {
            let mut part = YamlDocument::new(&mut reader);
            if !part.has_content().map_err(io)? {
                if part.eof {
                    return Ok(());
                }
                continue;
            }
            let mut options = serde_saphyr::Options::default();
            // State files are the operator's own; a List of a million objects is legitimate.
            options.budget = None;
            serde_saphyr::with_deserializer_from_reader_with_options(part, options, |d| {
                seed.deserialize(d)
            })
            .map_err(|e| e.to_string())
        };
        if let Some(error) = failure {
            return Err(error);
        }
        parsed.map_err(|message| LoadError::Syntax {
            path: path.to_owned(),
            document,
            format: if json { "JSON" } else { "YAML" },
            message,
        })?;
    }
}

/// Consumes whitespace; `false` at the end of the input.
fn skip_whitespace(reader: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let blanks = buffer
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let more = blanks < buffer.len();
        reader.consume(blanks);
        if more {
            return Ok(true);
        }
    }
}

/// One YAML document of a stream, read line by line up to the next `---` or `...` marker at the
/// start of a line. YAML forbids those markers inside scalars, so a line starting with one always
/// ends the document (the YAML crate then parses one document at a time, from the reader).
struct YamlDocument<'r, R> {
    reader: &'r mut R,
    line: Vec<u8>,
    at: usize,
    done: bool,
    started: bool,
    /// The input has ended (not just this document).
    eof: bool,
}

impl<'r, R: BufRead> YamlDocument<'r, R> {
    fn new(reader: &'r mut R) -> Self {
        Self {
            reader,
            line: Vec::new(),
            at: 0,
            done: false,
            started: false,
            eof: false,
        }
    }

    /// Reads up to the first line with content; `false` when the stream has no more documents.
    fn has_content(&mut self) -> std::io::Result<bool> {
        loop {
            if !self.next_line()? {
                return Ok(false);
            }
            let text = self.line.trim_ascii();
            if !text.is_empty() && !text.starts_with(b"#") {
                return Ok(true);
            }
        }
    }

    /// Loads the next line of this document into `line`; `false` at its end.
    fn next_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        self.at = 0;
        if self.done {
            return Ok(false);
        }
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            self.done = true;
            self.eof = true;
            return Ok(false);
        }
        let marker = |m: &[u8]| {
            self.line.starts_with(m) && self.line.get(3).is_none_or(|b| b.is_ascii_whitespace())
        };
        if marker(b"...") {
            self.done = true;
            self.line.clear();
            return Ok(false);
        }
        if marker(b"---") {
            if self.started {
                // The marker starts the next document; `--- value` on one line is rare in
                // manifests, and its value goes with the marker.
                self.done = true;
                self.line.clear();
                return Ok(false);
            }
            self.line.drain(..3);
        } else if !self.started && self.line.starts_with(b"%") {
            // A directive before the document: nothing for the parser to need here.
            self.line.clear();
        }
        let text = self.line.trim_ascii();
        if !text.is_empty() && !text.starts_with(b"#") {
            self.started = true;
        }
        Ok(true)
    }
}

impl<R: BufRead> Read for YamlDocument<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.line.len() {
            if !self.next_line()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.line.len() - self.at);
        out[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Parses one document: a list's items go to the callback one by one as they are parsed; any other
/// document goes to it whole. A document is a list when its top level has an `items` array
/// (`kind: List` or `<Kind>List`, as kubectl writes them), whatever the order of its keys.
struct DocumentSeed<'a, 'b> {
    document: usize,
    on_object: &'a mut OnObject<'b>,
    /// Where a callback error waits while the parser unwinds with a placeholder error.
    failure: &'a mut Option<LoadError>,
}

impl DocumentSeed<'_, '_> {
    fn give<E: de::Error>(&mut self, value: Value) -> Result<(), E> {
        (self.on_object)(self.document, value).map_err(|error| {
            *self.failure = Some(error);
            E::custom("stopped")
        })
    }
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

macro_rules! whole {
    ($($method:ident($type:ty) => $value:expr;)*) => {
        $(fn $method<E: de::Error>(mut self, v: $type) -> Result<(), E> {
            #[allow(clippy::redundant_closure_call)]
            let value = ($value)(v);
            self.give(value)
        })*
    };
}

impl<'de> Visitor<'de> for DocumentSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object or list")
    }

    whole! {
        visit_bool(bool) => Value::Bool;
        visit_i64(i64) => Value::from;
        visit_u64(u64) => Value::from;
        visit_f64(f64) => Value::from;
        visit_str(&str) => |v: &str| Value::String(v.to_owned());
        visit_string(String) => Value::String;
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // An empty or `null` document: nothing in it.
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<Value>()? {
            values.push(value);
        }
        self.give(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut fields = Map::new();
        let mut list = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" && !list {
                list = map.next_value_seed(ItemsSeed {
                    document: &mut self,
                })?;
                if list {
                    continue;
                }
                fields.insert(key, Value::Null);
            } else {
                fields.insert(key, map.next_value()?);
            }
        }
        if list {
            return Ok(());
        }
        self.give(Value::Object(fields))
    }
}

/// The `items` of a list, each handed over as soon as it is parsed; `true` when it was an array.
struct ItemsSeed<'s, 'a, 'b> {
    document: &'s mut DocumentSeed<'a, 'b>,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_, '_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while let Some(item) = seq.next_element::<Value>()? {
            self.document.give(item)?;
        }
        Ok(true)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Err(de::Error::custom(
            "items is a mapping, not a list of objects",
        ))
    }
}
