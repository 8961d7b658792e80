//! A bounded memo of values computed from a client's text (an appid): the last few
//! thousand kept, in two generations, so that a client sending ever new text costs
//! what it would without the memo and fills no memory.

use std::collections::HashMap;

/// Entries per generation: at most twice this many are kept.
const GENERATION: usize = 1024;
/// Longer keys are computed every time and not kept.
const MAX_KEY_BYTES: usize = 64;

pub struct Recent<V> {
    current: HashMap<String, V>,
    /// The generation before `current`: a key in neither is computed afresh.
    previous: HashMap<String, V>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent { current: HashMap::new(), previous: HashMap::new() }
    }
}

impl<V: Clone> Recent<V> {
    /// The value kept for `key`, or the one `make` computes (then kept).
    pub fn get_or_insert_with(&mut self, key: &str, make: impl FnOnce() -> V) -> V {
        if let Some(value) = self.current.get(key).or_else(|| self.previous.get(key)) {
            return value.clone();
        }
        let value = make();
        if key.len() <= MAX_KEY_BYTES {
            if self.current.len() >= GENERATION {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key.to_string(), value.clone());
        }
        value
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_values_within_a_bound_and_no_long_keys() {
        let mut recent = Recent::default();
        let mut made = 0;
        let mut get = |recent: &mut Recent<usize>, key: &str| {
            recent.get_or_insert_with(key, || {
                made += 1;
                key.len()
            })
        };
        assert_eq!(get(&mut recent, "com.a"), 5);
        assert_eq!(get(&mut recent, "com.a"), 5);
        let long = "x".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(get(&mut recent, &long), MAX_KEY_BYTES + 1);
        assert_eq!(get(&mut recent, &long), MAX_KEY_BYTES + 1);
        assert_eq!(recent.len(), 1, "the long key is not kept");
        for n in 0..3 * GENERATION {
            get(&mut recent, &format!("app{n}"));
        }
        assert!(recent.len() <= 2 * GENERATION);
        assert_eq!(made, 3 + 3 * GENERATION, "com.a was made once, the long key each time");
        let mut remade = false;
        recent.get_or_insert_with("com.a", || {
            remade = true;
            0
        });
        assert!(remade, "the oldest keys are forgotten");
    }
}
