//! ES256 (ECDSA over P-256 with SHA-256) verification with per-key precomputation, built for wasm.
//!
//! Why: the `p256` 0.13 crate's field arithmetic on 32-bit targets widens to 64-bit limbs and does its
//! products in `u128`, which wasm32 emulates; its verification also runs two constant-time, windowed
//! scalar multiplications with complete (doubling-capable) addition formulas. Inside Envoy's V8 that
//! costs about 1.6 ms per ES256 signature. A JWKS key verifies thousands of tokens, so this module
//! spends memory and a one-off build per key to make each verification a short run of additions.
//!
//! Design:
//! - Field: P-256's prime in eight 32-bit words, products as `u32 × u32 → u64` (one `i64.mul` in
//!   wasm), reduction by the NIST/Solinas identity for p = 2²⁵⁶ − 2²²⁴ + 2¹⁹² + 2⁹⁶ − 1 (additions
//!   and subtractions of the product's words, no multiplications). Elements are kept fully reduced.
//! - Points: Jacobian coordinates for the running sum; the tables hold affine points, so every step of
//!   a verification is a mixed addition (7M + 4S). There are no doublings at verification time.
//! - Fixed-base signed windows: for a base P and width w the table holds k·2^(w·j)·P for
//!   k = 1..=2^(w−1) and every window j; a scalar recoded into signed digits dⱼ ∈ [−2^(w−1)+1, 2^(w−1)]
//!   then costs one table lookup and one mixed addition per non-zero digit (negation is free in
//!   affine form). The generator's table (w = 7, 37 windows, ~145 KiB) is built once per process on
//!   first use; each key's table (w = 5, 52 windows, ~51 KiB) is built in [`P256Verifier::new`].
//!   Both are built in Jacobian form and converted to affine with one field inversion each
//!   (Montgomery's batch trick).
//! - The final check needs no inversion: with R = (X : Y : Z) in Jacobian form, x(R) = X / Z², so
//!   x(R) ≡ r (mod n) is X == r·Z², or X == (r + n)·Z² when r + n < p (x(R) may be ≥ n).
//! - Scalars (mod n): range checks, z mod n and the two products u₁ = z·s⁻¹, u₂ = r·s⁻¹ use the `p256`
//!   crate's `Scalar` (a small part of the total); s⁻¹ is computed here by variable-time safegcd
//!   divsteps on 30-bit limbs, because the crate's binary inversion is slow in wasm (~12 µs in V8).
//!
//! Measured (`make bench-verify`, medians, 2 shared cores): ES256 today → here, native 176 → 38 µs,
//! node's V8 905 → 45 µs; building a key's table 0.7 ms native, 0.85 ms V8; the generator's table
//! 2.2 ms native, 5.7 ms V8 (once per process; [`P256Verifier::warm_up`] moves it off the first request).
//!
//! Everything here handles public data only (keys, messages, signatures), so the arithmetic is
//! variable-time on purpose: early exits, data-dependent branches and table indices. Do not reuse
//! it for anything secret (signing, ECDH).
//!
//! Semantics are those of `p256::ecdsa::VerifyingKey` (as used through jwt-compact's `Es256`): the
//! signature is 64 bytes r ‖ s, big-endian; r and s must be in [1, n−1]; z is SHA-256(msg) reduced
//! mod n; high-S signatures are accepted; R at infinity is rejected.

// Word-indexed loops read better than iterator chains in multi-precision arithmetic.
#![allow(clippy::needless_range_loop)]

use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::{Field, PrimeField};
use p256::{AffinePoint, FieldBytes, Scalar, U256};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Window width of the generator's table.
const G_WINDOW: u32 = 7;
/// Window width of a key's table.
const Q_WINDOW: u32 = 5;

/// p, little-endian 32-bit words.
const P: [u32; 8] = [
    0xffff_ffff,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0,
    0,
    1,
    0xffff_ffff,
];
/// n (the group order), little-endian 32-bit words.
const N: [u32; 8] = [
    0xfc63_2551,
    0xf3b9_cac2,
    0xa717_9e84,
    0xbce6_faad,
    0xffff_ffff,
    0xffff_ffff,
    0,
    0xffff_ffff,
];

// ---------------------------------------------------------------------------------------------------
// Field arithmetic mod p.

/// An element of GF(p): little-endian 32-bit words, always fully reduced (in [0, p)).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fe([u32; 8]);

/// `a >= b` for little-endian words.
fn geq(a: &[u32; 8], b: &[u32; 8]) -> bool {
    for i in (0..8).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

/// `a - b` mod 2²⁵⁶ and whether it borrowed.
fn sub_words(a: &[u32; 8], b: &[u32; 8]) -> ([u32; 8], bool) {
    let mut r = [0u32; 8];
    let mut borrow = 0i64;
    for i in 0..8 {
        let v = a[i] as i64 - b[i] as i64 + borrow;
        r[i] = v as u32;
        borrow = v >> 32;
    }
    (r, borrow != 0)
}

/// `a + b` mod 2²⁵⁶ and whether it carried.
fn add_words(a: &[u32; 8], b: &[u32; 8]) -> ([u32; 8], bool) {
    let mut r = [0u32; 8];
    let mut carry = 0u64;
    for i in 0..8 {
        let v = a[i] as u64 + b[i] as u64 + carry;
        r[i] = v as u32;
        carry = v >> 32;
    }
    (r, carry != 0)
}

fn words_from_be(b: &[u8]) -> Option<[u32; 8]> {
    if b.len() != 32 {
        return None;
    }
    let mut w = [0u32; 8];
    for (i, chunk) in b.chunks_exact(4).enumerate() {
        w[7 - i] = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    Some(w)
}

impl Fe {
    const ZERO: Fe = Fe([0; 8]);
    const ONE: Fe = Fe([1, 0, 0, 0, 0, 0, 0, 0]);

    fn from_words(w: [u32; 8]) -> Option<Fe> {
        if geq(&w, &P) {
            None
        } else {
            Some(Fe(w))
        }
    }

    /// A 32-byte big-endian integer below p.
    fn from_be(b: &[u8]) -> Option<Fe> {
        Fe::from_words(words_from_be(b)?)
    }

    #[cfg(test)]
    fn to_be(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in 0..8 {
            out[28 - 4 * i..32 - 4 * i].copy_from_slice(&self.0[i].to_be_bytes());
        }
        out
    }

    fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    fn add(&self, o: &Fe) -> Fe {
        let (r, carry) = add_words(&self.0, &o.0);
        // The true sum is below 2p, so one subtraction of p (wrapping when it carried) reduces it.
        if carry || geq(&r, &P) {
            Fe(sub_words(&r, &P).0)
        } else {
            Fe(r)
        }
    }

    fn sub(&self, o: &Fe) -> Fe {
        let (r, borrow) = sub_words(&self.0, &o.0);
        if borrow {
            Fe(add_words(&r, &P).0)
        } else {
            Fe(r)
        }
    }

    fn neg(&self) -> Fe {
        Fe::ZERO.sub(self)
    }

    fn double(&self) -> Fe {
        self.add(self)
    }

    fn mul(&self, o: &Fe) -> Fe {
        let (a, b) = (&self.0, &o.0);
        let mut t = [0u32; 16];
        for i in 0..8 {
            let ai = a[i] as u64;
            let mut carry = 0u64;
            for j in 0..8 {
                // ≤ (2³²−1)² + 2·(2³²−1) = 2⁶⁴ − 1: no overflow.
                let v = ai * b[j] as u64 + t[i + j] as u64 + carry;
                t[i + j] = v as u32;
                carry = v >> 32;
            }
            t[i + 8] = carry as u32;
        }
        Fe::reduce(&t)
    }

    fn sqr(&self) -> Fe {
        let a = &self.0;
        let mut t = [0u32; 16];
        // Off-diagonal products once …
        for i in 0..8 {
            let ai = a[i] as u64;
            let mut carry = 0u64;
            for j in i + 1..8 {
                let v = ai * a[j] as u64 + t[i + j] as u64 + carry;
                t[i + j] = v as u32;
                carry = v >> 32;
            }
            t[i + 8] = carry as u32;
        }
        // … doubled …
        let mut hi = 0u32;
        for w in t.iter_mut() {
            let v = *w;
            *w = (v << 1) | hi;
            hi = v >> 31;
        }
        // … plus the squares on the diagonal.
        let mut carry = 0u64;
        for i in 0..8 {
            let sq = a[i] as u64 * a[i] as u64;
            let v = t[2 * i] as u64 + (sq & 0xffff_ffff) + carry;
            t[2 * i] = v as u32;
            let v = t[2 * i + 1] as u64 + (sq >> 32) + (v >> 32);
            t[2 * i + 1] = v as u32;
            carry = v >> 32;
        }
        Fe::reduce(&t)
    }

    /// Reduces a 512-bit product (little-endian words c₀..c₁₅) mod p (FIPS 186-4 D.2.3:
    /// T + 2S₁ + 2S₂ + S₃ + S₄ − D₁ − D₂ − D₃ − D₄, here summed word by word).
    fn reduce(c: &[u32; 16]) -> Fe {
        let c = c.map(|x| x as i64);
        let w = [
            c[0] + c[8] + c[9] - c[11] - c[12] - c[13] - c[14],
            c[1] + c[9] + c[10] - c[12] - c[13] - c[14] - c[15],
            c[2] + c[10] + c[11] - c[13] - c[14] - c[15],
            c[3] + 2 * c[11] + 2 * c[12] + c[13] - c[15] - c[8] - c[9],
            c[4] + 2 * c[12] + 2 * c[13] + c[14] - c[9] - c[10],
            c[5] + 2 * c[13] + 2 * c[14] + c[15] - c[10] - c[11],
            c[6] + 3 * c[14] + 2 * c[15] + c[13] - c[8] - c[9],
            c[7] + 3 * c[15] + c[8] - c[10] - c[11] - c[12] - c[13],
        ];
        let mut r = [0u32; 8];
        let mut carry = 0i64;
        for i in 0..8 {
            let v = w[i] + carry;
            r[i] = v as u32;
            carry = v >> 32;
        }
        // The value is r + carry·2²⁵⁶ with a small signed carry; fold it with
        // 2²⁵⁶ ≡ 2²²⁴ − 2¹⁹² − 2⁹⁶ + 1 (mod p). Each round shrinks the carry; at most three rounds.
        while carry != 0 {
            let k = carry;
            let fold = [k, 0, 0, -k, 0, 0, -k, k];
            carry = 0;
            for i in 0..8 {
                let v = r[i] as i64 + fold[i] + carry;
                r[i] = v as u32;
                carry = v >> 32;
            }
        }
        // Now r < 2²⁵⁶ < 2p.
        if geq(&r, &P) {
            r = sub_words(&r, &P).0;
        }
        Fe(r)
    }

    /// a^(p−2) (Fermat); zero maps to zero. Only used when building tables.
    fn invert(&self) -> Fe {
        // p − 2, little-endian words.
        let e: [u32; 8] = [
            0xffff_fffd,
            0xffff_ffff,
            0xffff_ffff,
            0,
            0,
            0,
            1,
            0xffff_ffff,
        ];
        let mut acc = Fe::ONE;
        for i in (0..256).rev() {
            acc = acc.sqr();
            if (e[i / 32] >> (i % 32)) & 1 == 1 {
                acc = acc.mul(self);
            }
        }
        acc
    }
}

// ---------------------------------------------------------------------------------------------------
// Points.

/// An affine point (never the point at infinity).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

/// A point in Jacobian coordinates (x = X/Z², y = Y/Z³); Z = 0 is the point at infinity.
#[derive(Clone, Copy)]
struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jacobian {
    const INFINITY: Jacobian = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }

    fn is_infinity(&self) -> bool {
        self.z.is_zero()
    }

    /// 2·self ("dbl-2001-b", a = −3). P-256 has prime order, so no finite point has y = 0.
    fn double(&self) -> Jacobian {
        if self.is_infinity() {
            return *self;
        }
        let delta = self.z.sqr();
        let gamma = self.y.sqr();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.sqr().sub(&beta4.double());
        let z3 = self.y.add(&self.z).sqr().sub(&gamma).sub(&delta);
        let gamma2_8 = gamma.sqr().double().double().double();
        let y3 = alpha.mul(&beta4.sub(&x3)).sub(&gamma2_8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// self + q for an affine q ("madd-2007-bl"), with the exceptional cases (self at infinity,
    /// self = q, self = −q) handled by branching.
    fn add_affine(&self, q: &Affine) -> Jacobian {
        if self.is_infinity() {
            return Jacobian::from_affine(q);
        }
        let z1z1 = self.z.sqr();
        let u2 = q.x.mul(&z1z1);
        let s2 = q.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let s2_y1 = s2.sub(&self.y);
        if h.is_zero() {
            return if s2_y1.is_zero() {
                self.double()
            } else {
                Jacobian::INFINITY
            };
        }
        let hh = h.sqr();
        let i = hh.double().double();
        let j = h.mul(&i);
        let r = s2_y1.double();
        let v = self.x.mul(&i);
        let x3 = r.sqr().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&j).double());
        let z3 = self.z.add(&h).sqr().sub(&z1z1).sub(&hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }
}

/// Converts to affine with one inversion for all (Montgomery's trick). A point at infinity (which the
/// tables never contain) comes out as (0, 0) instead of poisoning the others.
fn batch_to_affine(points: &[Jacobian]) -> Vec<Affine> {
    // prefix[i] = product of the non-zero Z of points[..i]
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::ONE;
    for p in points {
        prefix.push(acc);
        if !p.is_infinity() {
            acc = acc.mul(&p.z);
        }
    }
    let mut inv = acc.invert();
    let mut out = vec![
        Affine {
            x: Fe::ZERO,
            y: Fe::ZERO
        };
        points.len()
    ];
    for (i, p) in points.iter().enumerate().rev() {
        if p.is_infinity() {
            continue;
        }
        let zinv = inv.mul(&prefix[i]);
        inv = inv.mul(&p.z);
        let zinv2 = zinv.sqr();
        out[i] = Affine {
            x: p.x.mul(&zinv2),
            y: p.y.mul(&zinv2.mul(&zinv)),
        };
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Fixed-base tables.

/// Multiples of one base point for signed-window recoding of width `w`:
/// `points[j·2^(w−1) + k − 1] = k·2^(w·j)·base` for k = 1..=2^(w−1) (the top window only as far as a
/// recoded scalar below 2²⁵⁶ can reach).
struct Table {
    w: u32,
    points: Vec<Affine>,
}

/// Windows needed for a 256-bit scalar: the top one only takes the remaining bits plus a carry, which
/// never carries again.
fn windows(w: u32) -> usize {
    (256 / w + 1) as usize
}

impl Table {
    fn build(base: &Affine, w: u32) -> Table {
        let half = 1usize << (w - 1);
        let count = windows(w);
        // Bases 2^(w·j)·base.
        let mut bases = Vec::with_capacity(count);
        let mut b = Jacobian::from_affine(base);
        for _ in 0..count {
            bases.push(b);
            for _ in 0..w {
                b = b.double();
            }
        }
        let bases = batch_to_affine(&bases);
        let mut all = Vec::with_capacity(count * half);
        for (j, bj) in bases.iter().enumerate() {
            // The top window holds bits w·j..256 plus a carry: at most 2^(256 − w·j).
            let top_bits = 256 - w as usize * j;
            let n = if top_bits < w as usize {
                half.min(1 << top_bits)
            } else {
                half
            };
            let mut m = Jacobian::from_affine(bj);
            all.push(m);
            for _ in 1..n {
                m = m.add_affine(bj);
                all.push(m);
            }
        }
        Table {
            w,
            points: batch_to_affine(&all),
        }
    }

    fn bytes(&self) -> usize {
        self.points.len() * std::mem::size_of::<Affine>()
    }

    /// acc + scalar·base, for a scalar given as 32 big-endian bytes. None only if the table is
    /// inconsistent with its width (cannot happen for a built table).
    fn accumulate(&self, mut acc: Jacobian, scalar: &[u32; 8]) -> Option<Jacobian> {
        let w = self.w as usize;
        let half = 1i64 << (w - 1);
        let mask = (1u64 << w) - 1;
        let mut carry = 0i64;
        for j in 0..windows(self.w) {
            let bit = j * w;
            // Bits bit..bit+w of the scalar (zero beyond bit 255).
            let mut v = 0u64;
            if bit < 256 {
                let (word, shift) = (bit / 32, bit % 32);
                v = (scalar[word] >> shift) as u64;
                if shift + w > 32 && word + 1 < 8 {
                    v |= (scalar[word + 1] as u64) << (32 - shift);
                }
                v &= mask;
            }
            let mut d = v as i64 + carry;
            if d > half {
                d -= 1 << w;
                carry = 1;
            } else {
                carry = 0;
            }
            if d == 0 {
                continue;
            }
            let idx = j * half as usize + d.unsigned_abs() as usize - 1;
            let p = self.points.get(idx)?;
            acc = if d > 0 {
                acc.add_affine(p)
            } else {
                acc.add_affine(&Affine {
                    x: p.x,
                    y: p.y.neg(),
                })
            };
        }
        Some(acc)
    }
}

fn generator_table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let g = affine_of(&AffinePoint::GENERATOR).unwrap_or(Affine {
            x: Fe::ZERO,
            y: Fe::ZERO,
        });
        Table::build(&g, G_WINDOW)
    })
}

fn affine_of(p: &AffinePoint) -> Option<Affine> {
    let enc = p.to_encoded_point(false);
    Some(Affine {
        x: Fe::from_be(enc.x()?)?,
        y: Fe::from_be(enc.y()?)?,
    })
}

/// A 32-byte big-endian integer below n.
fn scalar_from_be(b: &[u8]) -> Option<Scalar> {
    let mut repr = FieldBytes::default();
    if b.len() != repr.len() {
        return None;
    }
    repr.copy_from_slice(b);
    Option::from(Scalar::from_repr(repr))
}

fn scalar_from_words(w: &[u32; 8]) -> Option<Scalar> {
    let mut repr = FieldBytes::default();
    for (i, chunk) in repr.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&w[7 - i].to_be_bytes());
    }
    Option::from(Scalar::from_repr(repr))
}

fn scalar_words(s: &Scalar) -> Option<[u32; 8]> {
    words_from_be(&s.to_bytes())
}

// ---------------------------------------------------------------------------------------------------
// Scalar inversion mod n: Bernstein–Yang "safegcd" divsteps, variable-time, in batches of 30 on
// signed 30-bit limbs so every product is i64 (after libsecp256k1's `modinv32_var`; see its
// doc/safegcd_implementation.md). The `p256` crate's binary inversion costs ~12 µs in V8; switching to
// this took a whole verification from 56 to 45 µs there.

const M30: u32 = u32::MAX >> 2;

/// A signed integer Σ v[i]·2^(30i): limbs 0..8 in [0, 2³⁰) once normalised, the top limb signed.
type Signed30 = [i64; 9];

fn to_signed30(w: &[u32; 8]) -> Signed30 {
    let mut out = [0i64; 9];
    for (i, limb) in out.iter_mut().enumerate() {
        let (word, shift) = (30 * i / 32, 30 * i % 32);
        let mut v = (w[word] >> shift) as u64;
        if word + 1 < 8 {
            v |= (w[word + 1] as u64) << (32 - shift);
        }
        *limb = (v & M30 as u64) as i64;
    }
    out
}

/// Packs non-negative normalised limbs (all in [0, 2³⁰)) into 288 bits.
fn signed30_to_words(a: &Signed30) -> [u32; 9] {
    let mut out = [0u32; 9];
    for (i, &limb) in a.iter().enumerate() {
        let (word, shift) = (30 * i / 32, 30 * i % 32);
        let limb = limb as u64;
        out[word] |= (limb << shift) as u32;
        if shift > 2 && word + 1 < 9 {
            out[word + 1] |= (limb >> (32 - shift)) as u32;
        }
    }
    out
}

/// Carries so that limbs 0..8 are in [0, 2³⁰); the value (and its sign, in the top limb) is kept.
fn normalize30(a: &mut Signed30) {
    for i in 0..8 {
        let c = a[i] >> 30;
        a[i] &= M30 as i64;
        a[i + 1] += c;
    }
}

/// 30 divsteps on the low bits of f and g: the new eta and the transition matrix (u, v, q, r),
/// scaled by 2³⁰, with [f', g'] = [[u, v], [q, r]]·[f, g] / 2³⁰.
fn divsteps_30(mut eta: i64, f0: u32, g0: u32) -> (i64, [i64; 4]) {
    let (mut u, mut v, mut q, mut r) = (1u32, 0u32, 0u32, 1u32);
    let (mut f, mut g) = (f0, g0);
    let mut i = 30u32;
    loop {
        // Divide g by two as often as it is even (at most i times: the sentinel bit).
        let zeros = (g | (u32::MAX << i)).trailing_zeros();
        g >>= zeros;
        u <<= zeros;
        v <<= zeros;
        eta -= zeros as i64;
        i -= zeros;
        if i == 0 {
            break;
        }
        // f and g are odd here.
        if eta < 0 {
            eta = -eta;
            (f, g) = (g, f.wrapping_neg());
            (u, q) = (q, u.wrapping_neg());
            (v, r) = (r, v.wrapping_neg());
        }
        // Cancel up to min(eta + 1, i, 8) low bits of g with a multiple of f.
        let limit = (eta + 1).min(i as i64) as u32;
        let m = (u32::MAX >> (32 - limit)) & 255;
        // −f⁻¹ mod 2⁸ by Newton's iteration (f·f ≡ 1 mod 8 for odd f).
        let mut finv = f;
        finv = finv.wrapping_mul(2u32.wrapping_sub(f.wrapping_mul(finv)));
        finv = finv.wrapping_mul(2u32.wrapping_sub(f.wrapping_mul(finv)));
        let w = g.wrapping_mul(finv.wrapping_neg()) & m;
        g = g.wrapping_add(f.wrapping_mul(w));
        q = q.wrapping_add(u.wrapping_mul(w));
        r = r.wrapping_add(v.wrapping_mul(w));
    }
    (
        eta,
        [
            u as i32 as i64,
            v as i32 as i64,
            q as i32 as i64,
            r as i32 as i64,
        ],
    )
}

/// [f, g] ← t·[f, g] / 2³⁰ (exact).
fn update_fg(f: &mut Signed30, g: &mut Signed30, t: &[i64; 4]) {
    let [u, v, q, r] = *t;
    let mut cf = u * f[0] + v * g[0];
    let mut cg = q * f[0] + r * g[0];
    cf >>= 30;
    cg >>= 30;
    for i in 1..9 {
        cf += u * f[i] + v * g[i];
        cg += q * f[i] + r * g[i];
        f[i - 1] = cf & M30 as i64;
        g[i - 1] = cg & M30 as i64;
        cf >>= 30;
        cg >>= 30;
    }
    f[8] = cf;
    g[8] = cg;
}

/// [d, e] ← (t·[d, e] + n·[md, me]) / 2³⁰, md and me chosen to make the division exact and keep
/// d, e in (−2n, n).
fn update_de(d: &mut Signed30, e: &mut Signed30, t: &[i64; 4], n: &Signed30, n_inv30: u32) {
    let [u, v, q, r] = *t;
    let sd = if d[8] < 0 { -1 } else { 0 };
    let se = if e[8] < 0 { -1 } else { 0 };
    let mut md = (u & sd) + (v & se);
    let mut me = (q & sd) + (r & se);
    let mut cd = u * d[0] + v * e[0];
    let mut ce = q * d[0] + r * e[0];
    md -= (n_inv30.wrapping_mul(cd as u32).wrapping_add(md as u32) & M30) as i64;
    me -= (n_inv30.wrapping_mul(ce as u32).wrapping_add(me as u32) & M30) as i64;
    cd += n[0] * md;
    ce += n[0] * me;
    cd >>= 30;
    ce >>= 30;
    for i in 1..9 {
        cd += u * d[i] + v * e[i] + n[i] * md;
        ce += q * d[i] + r * e[i] + n[i] * me;
        d[i - 1] = cd & M30 as i64;
        e[i - 1] = ce & M30 as i64;
        cd >>= 30;
        ce >>= 30;
    }
    d[8] = cd;
    e[8] = ce;
}

/// s⁻¹ mod n for s in [1, n−1] (as little-endian words); None for zero (or if the divsteps did
/// not converge within their proven bound, which cannot happen).
fn invert_mod_n(s: &[u32; 8]) -> Option<[u32; 8]> {
    if *s == [0; 8] {
        return None;
    }
    let n = to_signed30(&N);
    // n⁻¹ mod 2³² by Newton's iteration (3 → 6 → 12 → 24 → 48 bits).
    let mut n_inv = N[0];
    for _ in 0..4 {
        n_inv = n_inv.wrapping_mul(2u32.wrapping_sub(N[0].wrapping_mul(n_inv)));
    }
    let n_inv30 = n_inv & M30;
    let (mut f, mut g) = (n, to_signed30(s));
    let (mut d, mut e): (Signed30, Signed30) = ([0; 9], [1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut eta = -1i64;
    let mut done = false;
    // 256-bit inputs need at most 590 divsteps (safegcd paper, §11); 30 batches are 900.
    for _ in 0..30 {
        let (eta2, t) = divsteps_30(eta, f[0] as u32, g[0] as u32);
        eta = eta2;
        update_de(&mut d, &mut e, &t, &n, n_inv30);
        update_fg(&mut f, &mut g, &t);
        if g.iter().all(|&x| x == 0) {
            done = true;
            break;
        }
    }
    if !done {
        return None;
    }
    // f = ±1 (gcd of n and s), d = ±s⁻¹ in (−2n, n). Take it to [0, n).
    if f[8] < 0 {
        for x in d.iter_mut() {
            *x = -*x;
        }
    }
    // d ∈ (−2n, 2n): add 2n, normalise, then subtract n while ≥ n.
    for i in 0..9 {
        d[i] += 2 * n[i];
    }
    normalize30(&mut d);
    if d[8] < 0 {
        return None;
    }
    let w = signed30_to_words(&d);
    let mut lo: [u32; 8] = [w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]];
    let mut hi = w[8];
    while hi != 0 || geq(&lo, &N) {
        let (x, borrow) = sub_words(&lo, &N);
        lo = x;
        hi = hi.wrapping_sub(borrow as u32);
    }
    Some(lo)
}

// ---------------------------------------------------------------------------------------------------
// The verifier.

/// An ES256 verifier for one P-256 public key, with the key's fixed-base table. Cloning shares the
/// table.
#[derive(Clone)]
pub struct P256Verifier {
    /// None if the key could not be read (not reachable for a `VerifyingKey`): every verify is false.
    table: Option<Arc<Table>>,
}

impl fmt::Debug for P256Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P256Verifier")
            .field("table_bytes", &self.table_bytes())
            .finish_non_exhaustive()
    }
}

impl P256Verifier {
    /// Precomputes per-key tables once (called once per key per key-set generation per worker VM).
    pub fn new(key: &VerifyingKey) -> P256Verifier {
        let table = affine_of(key.as_affine()).map(|q| Arc::new(Table::build(&q, Q_WINDOW)));
        P256Verifier { table }
    }

    /// Bytes of this key's table (shared between clones).
    pub fn table_bytes(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.bytes())
    }

    /// Bytes of the generator's table (one per process, built on first use).
    pub fn generator_table_bytes() -> usize {
        generator_table().bytes()
    }

    /// Builds the generator's table now rather than on the first verification.
    pub fn warm_up() {
        generator_table();
    }

    /// JWS ES256: SHA-256 of `msg`, `sig` = 64-byte big-endian r || s (RFC 7518 §3.4).
    /// false (never panic) for a wrong length, r or s outside [1, n-1], or a bad signature.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_inner(msg, sig).unwrap_or(false)
    }

    fn verify_inner(&self, msg: &[u8], sig: &[u8]) -> Option<bool> {
        let table = self.table.as_ref()?;
        if sig.len() != 64 {
            return None;
        }
        let (r_bytes, s_bytes) = sig.split_at(32);
        let r = scalar_from_be(r_bytes)?;
        let s = scalar_from_be(s_bytes)?;
        if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
            return None;
        }
        let digest = Sha256::digest(msg);
        let z = <Scalar as Reduce<U256>>::reduce_bytes(&digest);
        let s_inv = scalar_from_words(&invert_mod_n(&words_from_be(s_bytes)?)?)?;
        let u1 = scalar_words(&(z * s_inv))?;
        let u2 = scalar_words(&(r * s_inv))?;

        let acc = generator_table().accumulate(Jacobian::INFINITY, &u1)?;
        let acc = table.accumulate(acc, &u2)?;
        if acc.is_infinity() {
            return Some(false);
        }
        // x(R) = X/Z² and x(R) < p; x(R) mod n == r  ⇔  x(R) == r or x(R) == r + n (< p).
        let zz = acc.z.sqr();
        let r_words = words_from_be(r_bytes)?;
        let r_fe = Fe::from_words(r_words)?; // r < n < p
        if r_fe.mul(&zz) == acc.x {
            return Some(true);
        }
        let (rn, carry) = add_words(&r_words, &N);
        if carry {
            return Some(false);
        }
        Some(Fe::from_words(rn).is_some_and(|rn| rn.mul(&zz) == acc.x))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crypto_bigint::{Encoding, NonZero, U512};
    use p256::ProjectivePoint;

    const P_BE: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];

    fn modmul_ref(a: &Fe, b: &Fe) -> [u8; 32] {
        let a = U256::from_be_slice(&a.to_be());
        let b = U256::from_be_slice(&b.to_be());
        let (lo, hi) = a.mul_wide(&b);
        let wide = U512::from((lo, hi));
        let p = NonZero::new(U512::from((U256::from_be_slice(&P_BE), U256::ZERO))).unwrap();
        let r = wide.rem(&p).to_be_bytes();
        r[32..].try_into().unwrap()
    }

    /// Deterministic pseudo-random field elements, biased towards the edges (0, p−1, words of
    /// all ones or zeros) where carries and folds go wrong.
    fn elements() -> Vec<Fe> {
        let mut out = vec![
            Fe::ZERO,
            Fe::ONE,
            Fe(sub_words(&P, &[1, 0, 0, 0, 0, 0, 0, 0]).0),
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..400 {
            let mut w = [0u32; 8];
            for k in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w[k] = match (i + k) % 5 {
                    0 => 0xffff_ffff,
                    1 => 0,
                    _ => x as u32,
                };
            }
            if let Some(fe) = Fe::from_words(w) {
                out.push(fe);
            }
        }
        out
    }

    #[test]
    fn field_ops_match_big_integer_reference() {
        let els = elements();
        for a in &els {
            assert_eq!(a.sqr().0, a.mul(a).0);
            assert_eq!(a.sqr().to_be(), modmul_ref(a, a));
            assert_eq!(a.add(&a.neg()), Fe::ZERO);
            if !a.is_zero() {
                assert_eq!(a.mul(&a.invert()), Fe::ONE);
            }
            for b in els.iter().step_by(7) {
                assert_eq!(a.mul(b).to_be(), modmul_ref(a, b));
                assert_eq!(a.add(b).sub(b), *a);
                assert_eq!(a.sub(b).add(b), *a);
            }
        }
        assert!(Fe::from_be(&P_BE).is_none());
    }

    #[test]
    fn scalar_inversion_matches_the_p256_crate() {
        let mut x = Scalar::from(0x0123_4567_89ab_cdefu64);
        let mut cases = vec![
            Scalar::ONE,
            -Scalar::ONE,
            Scalar::from(2u64),
            -Scalar::from(2u64),
        ];
        for _ in 0..2000 {
            x = x * x + Scalar::from(3u64);
            cases.push(x);
        }
        for s in cases {
            let want = s.invert().unwrap();
            let got = invert_mod_n(&scalar_words(&s).unwrap()).unwrap();
            assert_eq!(scalar_from_words(&got).unwrap(), want, "{s:?}");
        }
        assert!(invert_mod_n(&[0; 8]).is_none());
    }

    #[test]
    fn tables_hold_the_right_multiples() {
        let t = generator_table();
        let half = 1u64 << (G_WINDOW - 1);
        for (idx, p) in t.points.iter().enumerate() {
            if idx % 37 != 0 && idx + 1 != t.points.len() {
                continue;
            }
            let j = idx as u64 / half;
            let k = idx as u64 % half + 1;
            // k·2^(7j) as a scalar mod n.
            let mut s = Scalar::from(k);
            for _ in 0..(G_WINDOW as u64 * j) {
                s = s.double();
            }
            let expect = affine_of(&(ProjectivePoint::GENERATOR * s).to_affine()).unwrap();
            assert!(*p == expect, "entry {idx}");
        }
        assert_eq!(t.points.len(), 36 * 64 + 16);
    }

    #[test]
    fn accumulate_matches_scalar_multiplication() {
        let t = generator_table();
        for seed in 0u64..20 {
            let mut s = Scalar::from(seed * 0x1234_5678_9abc + 1);
            s = s * s * s * s; // spread across 256 bits
            if seed == 0 {
                s = -Scalar::ONE; // n − 1: every window at its extreme
            }
            let got = t
                .accumulate(Jacobian::INFINITY, &scalar_words(&s).unwrap())
                .unwrap();
            let got = batch_to_affine(&[got])[0];
            let expect = affine_of(&(ProjectivePoint::GENERATOR * s).to_affine()).unwrap();
            assert!(got == expect, "seed {seed}");
        }
        let zero = t.accumulate(Jacobian::INFINITY, &[0; 8]).unwrap();
        assert!(zero.is_infinity());
    }
}
