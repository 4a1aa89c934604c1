//! Python's `random` module, bit for bit: `seed(int)` then `randint(a, b)`, so the `random`
//! workload reproduces nano-vllm's `bench.py` exactly (its 256 requests ask for 133,966 output
//! tokens). MT19937 comes from `rand_mt`; the seeding and the rejection sampling are CPython's.
use rand_mt::Mt;

pub struct PythonRandom(Mt);

impl PythonRandom {
    /// `random.seed(seed)`: CPython keys MT19937's `init_by_array` with the seed's 32-bit words.
    pub fn new(seed: u64) -> Self {
        let key: Vec<u32> = match seed >> 32 {
            0 => vec![seed as u32],
            hi => vec![seed as u32, hi as u32],
        };
        Self(Mt::new_with_key(key))
    }

    /// `random.getrandbits(k)` for `1 <= k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.0.next_u32() >> (32 - k)
    }

    /// `random.randint(a, b)`, both ends included.
    pub fn randint(&mut self, a: u32, b: u32) -> u32 {
        let n = b - a + 1;
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return a + r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values printed by CPython 3.11: `seed(0); [randint(100, 1024) for _ in range(3)]` etc.
    #[test]
    fn matches_cpython() {
        let mut r = PythonRandom::new(0);
        let len = r.randint(100, 1024);
        let first: Vec<u32> = (0..5).map(|_| r.randint(0, 10000)).collect();
        assert_eq!(len, 964);
        assert_eq!(first, vec![6311, 6890, 663, 4242, 8376]);
    }
}
