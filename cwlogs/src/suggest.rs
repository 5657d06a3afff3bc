//! "Did you mean": rank candidate names by how close they are to what was typed.
//!
//! Real similarity, not prefixes: Jaro-Winkler catches shared beginnings and small
//! slips, normalised Damerau-Levenshtein catches transpositions and missing letters,
//! and a containment bonus lifts `gateway` → `api-gateway`. Names are compared whole and by
//! their last `/` segment, since groups are often `/ecs/<service>`.

/// Below this score a candidate is noise, not a suggestion.
const MIN_SCORE: f64 = 0.5;

/// How close `candidate` is to `typed`, from 0 (nothing alike) upward.
pub fn score(typed: &str, candidate: &str) -> f64 {
    let t = typed.to_lowercase();
    let c = candidate.to_lowercase();
    let last = c.rsplit('/').next().unwrap_or(&c).to_string();
    [c.as_str(), last.as_str()]
        .iter()
        .map(|c| pair_score(&t, c))
        .fold(0.0, f64::max)
}

fn pair_score(t: &str, c: &str) -> f64 {
    if t.is_empty() || c.is_empty() {
        return 0.0;
    }
    let jw = strsim::jaro_winkler(t, c);
    let dl = strsim::normalized_damerau_levenshtein(t, c);
    // Jaro-Winkler is generous to long shared prefixes but blind to transpositions in
    // short words; edit distance is the reverse. Their mean ranks both kinds well.
    let mut s = (jw + dl) / 2.0;
    if c.contains(t) {
        // What was typed is part of the name: a strong hint, stronger the more it covers.
        s = s.max(0.75 + 0.25 * (t.len() as f64 / c.len() as f64));
    }
    s
}

/// Up to `n` candidates worth suggesting, best first (ties by name for stable output).
pub fn closest<'a>(
    typed: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    n: usize,
) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != typed)
        .map(|c| (score(typed, c), c))
        .filter(|(s, _)| *s >= MIN_SCORE)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.truncate(n);
    scored.into_iter().map(|(_, c)| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUPS: &[&str] = &[
        "api",
        "api-gateway",
        "billing-worker",
        "/ecs/checkout",
        "checkout-canary",
        "integrations-consumer",
        "web",
        "webhooks",
    ];

    fn top(typed: &str) -> Vec<String> {
        closest(typed, GROUPS.iter().copied(), 5)
    }

    #[test]
    fn typo_finds_the_intended_name_first() {
        assert_eq!(top("chekout")[0], "/ecs/checkout");
        assert_eq!(top("billing-wroker")[0], "billing-worker"); // transposition
        assert_eq!(top("integration-consumer")[0], "integrations-consumer"); // missing letter
        assert_eq!(top("webhoks")[0], "webhooks");
    }

    #[test]
    fn missing_parts_match_by_substring() {
        let t = top("gateway");
        assert_eq!(t[0], "api-gateway");
        let t = top("canary");
        assert_eq!(t[0], "checkout-canary");
    }

    #[test]
    fn unrelated_names_are_not_suggested() {
        assert!(top("zzzzqqq").is_empty());
    }

    #[test]
    fn at_most_n_and_never_the_name_itself() {
        let names: Vec<String> = (0..20).map(|i| format!("svc-{i}")).collect();
        let got = closest("svc-1", names.iter().map(|s| s.as_str()), 5);
        assert_eq!(got.len(), 5);
        assert!(!got.contains(&"svc-1".to_string()));
    }

    #[test]
    fn ranking_is_by_similarity_not_by_prefix() {
        // "wbe" shares no prefix with "web" but is one transposition away.
        assert_eq!(top("wbe")[0], "web");
    }
}
