//! The part of [regex-cache](https://github.com/1aim/rust-regex-cache) 0.2's API
//! that `phonenumber` uses, with a cheaper look-up. The original finds a compiled
//! regex by its pattern text in one LRU map behind a mutex, and searches with the
//! lock held: a SipHash of the whole pattern, twice, a list update and a global
//! lock for each of the dozens of metadata regexes a phone check runs. In otpgate's
//! login-start benchmark that cost more than the searches themselves.
//!
//! Here each `CachedRegex` keeps its compiled regex in a slot of its own (shared by
//! its clones), so a use is one uncontended lock and a reference count. Memory
//! stays bounded as before: the `RegexCache` a regex was built with remembers the
//! slots in the order they were filled, and empties the oldest beyond its capacity
//! (first in, first out rather than least recently used). A compiled metadata regex
//! takes about 100 KB, so all 3 319 of them would take over 300 MB.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

pub use regex::{Captures, Error, Match, Regex, RegexBuilder, Replacer};

type Slot = Mutex<Option<Arc<Regex>>>;

/// Bounds how many regexes built with it are compiled at once.
#[derive(Debug)]
pub struct RegexCache {
    capacity: usize,
    /// Filled slots, oldest first; a slot dropped with its regexes is skipped.
    filled: VecDeque<Weak<Slot>>,
}

impl RegexCache {
    pub fn new(capacity: usize) -> RegexCache {
        RegexCache { capacity: capacity.max(1), filled: VecDeque::new() }
    }

    /// Records a newly filled slot; returns the slots to empty.
    fn filled(&mut self, slot: &Arc<Slot>) -> Vec<Weak<Slot>> {
        self.filled.push_back(Arc::downgrade(slot));
        let excess = self.filled.len().saturating_sub(self.capacity);
        self.filled.drain(..excess).collect()
    }

    /// How many slots hold a compiled regex.
    pub fn len(&self) -> usize {
        self.filled.iter().filter_map(Weak::upgrade).filter(|slot| lock(slot).is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock only means a panic elsewhere; the data (a cache) is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Options {
    case_insensitive: bool,
    multi_line: bool,
    dot_matches_new_line: bool,
    swap_greed: bool,
    ignore_whitespace: bool,
    unicode: bool,
    size_limit: usize,
    dfa_size_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            case_insensitive: false,
            multi_line: false,
            dot_matches_new_line: false,
            swap_greed: false,
            ignore_whitespace: false,
            unicode: true,
            size_limit: 10 * (1 << 20),
            dfa_size_limit: 2 * (1 << 20),
        }
    }
}

/// A regex compiled on first use and kept until its cache needs the room; clones
/// share the compiled regex.
#[derive(Clone)]
pub struct CachedRegex {
    source: Arc<str>,
    options: Options,
    cache: Arc<Mutex<RegexCache>>,
    slot: Arc<Slot>,
}

impl CachedRegex {
    /// Checks the syntax now; compiles on first use.
    pub fn new(cache: Arc<Mutex<RegexCache>>, source: &str) -> Result<CachedRegex, Error> {
        CachedRegexBuilder::new(cache, source).build()
    }

    /// Like `new` without the syntax check: a bad pattern panics on first use.
    pub fn new_unchecked(cache: Arc<Mutex<RegexCache>>, source: &str) -> CachedRegex {
        CachedRegexBuilder::new(cache, source).build_unchecked()
    }

    fn regex(&self) -> Arc<Regex> {
        let compiled = {
            let mut slot = lock(&self.slot);
            if let Some(regex) = &*slot {
                return Arc::clone(regex);
            }
            // Compiled with the slot's lock held, so that racing users compile it once.
            let regex = Arc::new(self.compile());
            *slot = Some(Arc::clone(&regex));
            regex
        };
        // The slot's lock is released before the cache's is taken. The only holder of both
        // (`len`) takes the cache's first, so no two threads can wait on each other.
        let evicted = lock(&self.cache).filled(&self.slot);
        for slot in evicted.iter().filter_map(Weak::upgrade) {
            *lock(&slot) = None;
        }
        compiled
    }

    fn compile(&self) -> Regex {
        let o = self.options;
        RegexBuilder::new(&self.source)
            .case_insensitive(o.case_insensitive)
            .multi_line(o.multi_line)
            .dot_matches_new_line(o.dot_matches_new_line)
            .swap_greed(o.swap_greed)
            .ignore_whitespace(o.ignore_whitespace)
            .unicode(o.unicode)
            .size_limit(o.size_limit)
            .dfa_size_limit(o.dfa_size_limit)
            .build()
            .expect("the pattern's syntax was checked when it was built")
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex().is_match(text)
    }

    pub fn find<'t>(&self, text: &'t str) -> Option<Match<'t>> {
        self.regex().find(text)
    }

    pub fn captures<'t>(&self, text: &'t str) -> Option<Captures<'t>> {
        self.regex().captures(text)
    }

    pub fn replace<'t, R: Replacer>(&self, text: &'t str, rep: R) -> Cow<'t, str> {
        self.regex().replace(text, rep)
    }

    pub fn replace_all<'t, R: Replacer>(&self, text: &'t str, rep: R) -> Cow<'t, str> {
        self.regex().replace_all(text, rep)
    }

    pub fn shortest_match(&self, text: &str) -> Option<usize> {
        self.regex().shortest_match(text)
    }

    pub fn captures_len(&self) -> usize {
        self.regex().captures_len()
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for CachedRegex {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

impl fmt::Display for CachedRegex {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(&*self.source, f)
    }
}

/// Options for a [`CachedRegex`], as `regex::RegexBuilder` has them.
#[derive(Clone, Debug)]
pub struct CachedRegexBuilder {
    cache: Arc<Mutex<RegexCache>>,
    source: String,
    options: Options,
}

impl CachedRegexBuilder {
    pub fn new(cache: Arc<Mutex<RegexCache>>, source: &str) -> CachedRegexBuilder {
        CachedRegexBuilder { cache, source: source.to_owned(), options: Options::default() }
    }

    /// Checks the syntax now (with the builder's flags); compiles on first use.
    pub fn build(&self) -> Result<CachedRegex, Error> {
        regex_syntax::ParserBuilder::new()
            .case_insensitive(self.options.case_insensitive)
            .multi_line(self.options.multi_line)
            .dot_matches_new_line(self.options.dot_matches_new_line)
            .swap_greed(self.options.swap_greed)
            .ignore_whitespace(self.options.ignore_whitespace)
            .unicode(self.options.unicode)
            .build()
            .parse(&self.source)
            .map_err(|e| Error::Syntax(e.to_string()))?;
        Ok(self.build_unchecked())
    }

    pub fn build_unchecked(&self) -> CachedRegex {
        CachedRegex { source: self.source.as_str().into(), options: self.options, cache: Arc::clone(&self.cache), slot: Arc::default() }
    }

    pub fn case_insensitive(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.case_insensitive = yes;
        self
    }

    pub fn multi_line(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.multi_line = yes;
        self
    }

    pub fn dot_matches_new_line(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.dot_matches_new_line = yes;
        self
    }

    pub fn swap_greed(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.swap_greed = yes;
        self
    }

    pub fn ignore_whitespace(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.ignore_whitespace = yes;
        self
    }

    pub fn unicode(&mut self, yes: bool) -> &mut CachedRegexBuilder {
        self.options.unicode = yes;
        self
    }

    pub fn size_limit(&mut self, limit: usize) -> &mut CachedRegexBuilder {
        self.options.size_limit = limit;
        self
    }

    pub fn dfa_size_limit(&mut self, limit: usize) -> &mut CachedRegexBuilder {
        self.options.dfa_size_limit = limit;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize) -> Arc<Mutex<RegexCache>> {
        Arc::new(Mutex::new(RegexCache::new(capacity)))
    }

    #[test]
    fn matches_with_the_builder_flags() {
        let re = CachedRegexBuilder::new(cache(10), "^ \\d+ $").ignore_whitespace(true).build().unwrap();
        assert!(re.is_match("123"));
        assert!(!re.is_match("12a"));
        assert_eq!(CachedRegex::new(cache(10), "\\d+").unwrap().find("ab 42").map(|m| m.range()), Some(3..5));
        assert_eq!(re.as_str(), "^ \\d+ $");
    }

    #[test]
    fn clones_share_one_compiled_regex() {
        let shared = cache(10);
        let re = CachedRegex::new(shared.clone(), "a+").unwrap();
        let copy = re.clone();
        assert!(copy.is_match("aa"));
        assert_eq!(shared.lock().unwrap().len(), 1);
        assert!(Arc::ptr_eq(&re.regex(), &copy.regex()));
        assert_eq!(shared.lock().unwrap().len(), 1, "compiled once");
    }

    #[test]
    fn no_more_than_the_capacity_are_compiled_and_the_oldest_go_first() {
        let shared = cache(2);
        let regexes: Vec<CachedRegex> = (0..5).map(|n| CachedRegex::new(shared.clone(), &format!("^{n}$")).unwrap()).collect();
        for (n, re) in regexes.iter().enumerate() {
            assert!(re.is_match(&n.to_string()));
            assert!(shared.lock().unwrap().len() <= 2);
        }
        let compiled: Vec<bool> = regexes.iter().map(|re| re.slot.lock().unwrap().is_some()).collect();
        assert_eq!(compiled, [false, false, false, true, true]);
        assert!(regexes[0].is_match("0"), "an emptied slot compiles again");
        assert!(regexes[3].slot.lock().unwrap().is_none(), "making room for it emptied the oldest");
    }

    #[test]
    fn bad_syntax_is_refused_when_built() {
        assert!(CachedRegex::new(cache(10), "(12").is_err());
        assert!(CachedRegexBuilder::new(cache(10), "# a comment\n(12").ignore_whitespace(true).build().is_err());
    }
}
