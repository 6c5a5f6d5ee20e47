//! What the README and `docs/` say that could go stale, checked against the repository: the
//! fixture corpus counts, the `--controllers` default, the envtest tier's test count, the sample
//! reviews, the README's set-up commands, and every relative link (to a file that exists, and to
//! a heading that file has). A figure that drifts fails here, naming the page and what to write.

#[path = "support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use milo_webhook::controllers::ControllerKind;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/, in name order.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root().join("README.md"));
    pages
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The text outside fenced code blocks, as (line number, line).
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push((i + 1, line));
        }
    }
    lines
}

/// The text outside fenced code blocks, in paragraphs (a table is one paragraph).
fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = vec![String::new()];
    for (_, line) in prose(text) {
        if line.trim().is_empty() {
            paragraphs.push(String::new());
        } else {
            let last = paragraphs.last_mut().expect("never empty");
            last.push_str(line);
            last.push('\n');
        }
    }
    paragraphs.retain(|p| !p.is_empty());
    paragraphs
}

/// The `code` spans of a text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

const NUMBER_WORDS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];

fn number_word(n: usize) -> &'static str {
    NUMBER_WORDS
        .get(n)
        .unwrap_or_else(|| panic!("no number word for {n}"))
}

fn number_of(word: &str) -> Option<usize> {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    word.parse()
        .ok()
        .or_else(|| NUMBER_WORDS.iter().position(|w| *w == word))
}

/// Every number stated as `<before>N<after>` in `text`.
fn numbers_between(text: &str, before: &str, after: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(before) {
        rest = &rest[i + before.len()..];
        if let Some(end) = rest.find(after)
            && let Some(n) = number_of(&rest[..end])
        {
            found.push(n);
        }
    }
    found
}

#[test]
fn the_fixture_corpus_counts_are_the_files_the_corpus_tests_load() {
    let mut by_prefix: BTreeMap<String, usize> = BTreeMap::new();
    let all = fixtures::all();
    for fixture in &all {
        let prefix = fixture.name.split('-').next().expect("a name").to_owned();
        *by_prefix.entry(prefix).or_default() += 1;
    }

    let page = root().join("docs/admission.md");
    let text = read(&page);
    let totals = numbers_between(&text, "`webhooks/` holds ", " cases");
    assert_eq!(
        totals,
        vec![all.len()],
        "{}: write \"`webhooks/` holds {} cases\" (once)",
        shown(&page),
        all.len()
    );
    // The table's rows: | `prefix-*` | count | what |
    let mut documented: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in prose(&text) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let Some(prefix) = cells[1]
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix("-*`"))
        else {
            continue;
        };
        let count = cells[2]
            .parse()
            .unwrap_or_else(|_| panic!("{}: not a count: {line}", shown(&page)));
        documented.insert(prefix.to_owned(), count);
    }
    assert_eq!(
        documented,
        by_prefix,
        "{}: the corpus table (file prefix: cases) must be what webhooks/ holds",
        shown(&page)
    );
    // Nowhere else states another total.
    for page in pages() {
        for n in numbers_between(&read(&page), "`webhooks/` holds ", " cases") {
            assert_eq!(
                n,
                all.len(),
                "{}: the corpus holds {}",
                shown(&page),
                all.len()
            );
        }
    }
}

#[test]
fn the_controllers_default_is_every_controller_wherever_it_is_written() {
    // ALL is the default selection; the enum's variants are what exists.
    let variants: Vec<&str> = ControllerKind::value_variants()
        .iter()
        .map(|k| k.as_str())
        .collect();
    let all: Vec<&str> = ControllerKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(all, variants, "ControllerKind::ALL must list every variant");
    let full = all.join(",");

    let mut full_lists = 0;
    for page in pages() {
        for paragraph in paragraphs(&read(&page)) {
            if !paragraph.contains("--controllers") {
                continue;
            }
            for span in code_spans(&paragraph) {
                let list = span.strip_prefix("--controllers=").unwrap_or(span);
                let names: Vec<&str> = list.split(',').collect();
                let is_list = names.len() > 1
                    && names
                        .iter()
                        .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase()));
                if !is_list {
                    continue;
                }
                for name in &names {
                    assert!(
                        all.contains(name),
                        "{}: `{name}` is not a controller (they are {full}): {paragraph}",
                        shown(&page)
                    );
                }
                if list == full {
                    full_lists += 1;
                }
            }
            for n in numbers_between(&paragraph, "all ", " ") {
                assert_eq!(
                    n,
                    all.len(),
                    "{}: there are {} controllers (\"all {}\"): {paragraph}",
                    shown(&page),
                    all.len(),
                    number_word(all.len())
                );
            }
            for n in numbers_between(&paragraph, "all ", ":") {
                assert_eq!(n, all.len(), "{}: {paragraph}", shown(&page));
            }
            for n in numbers_between(&paragraph, "all ", ")") {
                assert_eq!(n, all.len(), "{}: {paragraph}", shown(&page));
            }
        }
    }
    assert!(
        full_lists >= 2,
        "the docs should spell out the default `{full}` (controllers page and Milo's flags)"
    );
}

#[test]
fn the_envtest_tier_test_count_is_what_its_main_declares() {
    // One test per `name: CrdSet` pair of each `scenario!` line.
    let main = read(&root().join("tests/envtest/main.rs"));
    let declared: usize = main
        .lines()
        .filter(|l| l.starts_with("scenario!("))
        .map(|l| l.matches(": Ours").count() + l.matches(": Milo").count())
        .sum();
    assert!(declared > 0, "no scenario! lines in tests/envtest/main.rs");
    let page = root().join("docs/development.md");
    assert_eq!(
        numbers_between(&read(&page), "`tests/envtest/main.rs` declares ", " tests"),
        vec![declared],
        "{}: write \"`tests/envtest/main.rs` declares {declared} tests\"",
        shown(&page)
    );
}

#[test]
fn the_readme_counts_the_sample_reviews_and_keeps_the_two_set_up_commands() {
    let reviews = std::fs::read_dir(root().join("manifests/samples/reviews"))
        .expect("manifests/samples/reviews exists")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    let readme = read(&root().join("README.md"));
    assert_eq!(
        numbers_between(&readme, "the samples include ", ")"),
        vec![reviews],
        "README.md: write \"(the samples include {})\"",
        number_word(reviews)
    );
    // CI runs the README's test command; a newcomer runs both as written.
    for command in [
        "```sh\ncargo run --release -- serve --state manifests/samples/state\n```",
        "```sh\ncargo test --locked\n```",
    ] {
        assert!(readme.contains(command), "README.md lost {command}");
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (a repeated heading gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let n = seen.entry(base.clone()).or_default();
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of the inline links `[text](target)` outside code, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    for (number, line) in prose(text) {
        // Inline code may hold `](`; drop it first.
        let without_code: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("``");
        let mut rest = without_code.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            links.push((number, rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_at_a_file_and_heading_that_exist() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        for (line, target) in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().expect("a directory").join(path)
            };
            let at = format!("{}:{line}: ({target})", shown(&page));
            if !file.exists() {
                broken.push(format!("{at}: {} does not exist", shown(&file)));
                continue;
            }
            if let Some(anchor) = anchor {
                let headings = if file.extension().is_some_and(|e| e == "md") {
                    anchors(&read(&file))
                } else {
                    BTreeSet::new()
                };
                if !headings.contains(anchor) {
                    broken.push(format!(
                        "{at}: {} has no heading #{anchor} (it has {headings:?})",
                        shown(&file)
                    ));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_readme_links_every_docs_page() {
    let readme = read(&root().join("README.md"));
    for page in pages().iter().skip(1) {
        let name = page.file_name().unwrap().to_string_lossy();
        assert!(
            readme.contains(&format!("](docs/{name})")),
            "README.md's \"Read on\" does not link docs/{name}"
        );
    }
}

#[test]
fn the_link_and_number_parsers_read_what_the_pages_write() {
    assert_eq!(
        slug("Which cluster `serve` uses"),
        "which-cluster-serve-uses"
    );
    assert_eq!(
        slug("Replacing Milo's controllers"),
        "replacing-milos-controllers"
    );
    assert_eq!(
        slug("One-click unsubscribe (RFC 8058)"),
        "one-click-unsubscribe-rfc-8058"
    );
    assert_eq!(
        links("see [a](b.md#c) and `[x](y)` and [d](https://e)"),
        vec![(1, "b.md#c".to_owned()), (1, "https://e".to_owned())]
    );
    assert_eq!(
        numbers_between("holds 12 cases, all seven: x", "all ", ":"),
        vec![7]
    );
    assert_eq!(number_of("seven"), Some(7));
    assert_eq!(number_of("many"), None);
}
