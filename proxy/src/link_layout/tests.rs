use super::*;

const RUST: &str = "_ZN11vigil_proxy4main17h0123456789abcdefE";

#[test]
fn a_rust_symbol_loses_its_hash_and_llvm_suffix() {
    assert_eq!(pattern_of(RUST).unwrap(), "_ZN11vigil_proxy4main17h*E*");
    assert_eq!(
        pattern_of(&format!("{RUST}.llvm.12345678901")).unwrap(),
        "_ZN11vigil_proxy4main17h*E*"
    );
    // Callgrind's recursion marker.
    assert_eq!(
        pattern_of(&format!("{RUST}'2")).unwrap(),
        "_ZN11vigil_proxy4main17h*E*"
    );
    // Generic instances differ only in the hash: one pattern covers them.
    assert_eq!(
        pattern_of("_ZN4core3ptr13drop_in_place17hfedcba9876543210E"),
        pattern_of("_ZN4core3ptr13drop_in_place17h0000000000000000E")
    );
}

#[test]
fn what_is_not_a_legacy_hash_is_kept_exactly() {
    // C functions, GCC clones, a v0 symbol.
    for s in [
        "aws_lc_0_47_0_SHA256_Init",
        "jent_keccakp_chi",
        "ec_GFp_mont_mul.constprop.0",
        // Uppercase hex is not what rustc writes; nor is a hash of 15 digits.
        "_ZN11vigil_proxy4main17h0123456789ABCDEFE",
        "_ZN11vigil_proxy4main17h0123456789abcdeE",
    ] {
        assert_eq!(pattern_of(s).as_deref(), Some(s), "{s}");
    }
    // A C symbol LLVM promoted keeps its name; the suffix becomes a wildcard.
    assert_eq!(pattern_of("helper.llvm.42").unwrap(), "helper.llvm.*");
}

#[test]
fn a_v0_symbol_loses_its_crate_disambiguators_and_covers_its_numbered_copies() {
    let v0 = "_RNvMs0_NtNtCsjrHSEGnQ3l9_3std4sync9SyncWaker10disconnect";
    let want = "_RNvMs0_NtNtCs*_3std4sync9SyncWaker10disconnect*";
    assert_eq!(pattern_of(v0).unwrap(), want);
    assert_eq!(pattern_of(&format!("{v0}.5771")).unwrap(), want);
    assert_eq!(pattern_of(&format!("{v0}.llvm.99")).unwrap(), want);
    // An instance: its generic arguments stay (they tell instances apart), the
    // disambiguators of every crate and the back-references after them do not.
    let inst = "_RINvNtNtNtCs1a2B3c_5tokio7runtime4task3raw4pollINtNtCsXy9_11vigil_proxy7inbound5ServeEB1f_E";
    assert_eq!(
        pattern_of(inst).unwrap(),
        "_RINvNtNtNtCs*_5tokio7runtime4task3raw4pollINtNtCs*_11vigil_proxy7inbound5ServeEB*_E*"
    );
    // Built again with other metadata: the same pattern.
    let again =
        "_RINvNtNtNtCsZZ_5tokio7runtime4task3raw4pollINtNtCs0_11vigil_proxy7inbound5ServeEB1g_E";
    assert_eq!(pattern_of(again), pattern_of(inst));
    // Another instance of the same function: another pattern.
    let other = "_RINvNtNtNtCs1a2B3c_5tokio7runtime4task3raw4pollINtNtCsXy9_11vigil_proxy8outbound5ServeEB1f_E";
    assert_ne!(pattern_of(other), pattern_of(inst));
}

#[test]
fn what_is_not_a_symbol_has_no_pattern() {
    for s in [
        "",
        "(below main)",
        "0x00000000002823f0",
        "'2",
        "name with spaces",
        "core::fmt::write",
        "a)b",
    ] {
        assert_eq!(pattern_of(s), None, "{s:?}");
    }
}

#[test]
fn the_script_lists_each_pattern_in_order_before_text() {
    let list = "# request path\n_ZN5hyper4body17h*E*\n\n  jent_keccakp_chi  \n# startup\nmain\n";
    let s = script(list).unwrap().unwrap();
    let body: Vec<&str> = s
        .lines()
        .filter(|l| l.trim_start().starts_with("*("))
        .collect();
    assert_eq!(
        body,
        [
            "    *(.text._ZN5hyper4body17h*E* .text.unlikely._ZN5hyper4body17h*E* .text.startup._ZN5hyper4body17h*E*)",
            "    *(.text.jent_keccakp_chi .text.unlikely.jent_keccakp_chi .text.startup.jent_keccakp_chi)",
            "    *(.text.main .text.unlikely.main .text.startup.main)",
        ]
    );
    assert!(s.contains(&format!("  {SECTION} :\n  {{\n")));
    // The default layout's `.text`, where it was: in the default layout, not replacing it.
    assert!(s.trim_end().ends_with("INSERT BEFORE .fini;"), "{s}");
}

#[test]
fn an_empty_list_is_no_script() {
    assert_eq!(script("").unwrap(), None);
    assert_eq!(script("# nothing yet\n\n").unwrap(), None);
}

#[test]
fn a_line_that_could_break_the_script_fails_with_its_number() {
    for bad in [
        "foo)", "a b", "x;y", "/* c */", "*", "**", "a\"b", "x{y}", "p/q",
    ] {
        let list = format!("ok_1\n# fine\n{bad}\n");
        let err = script(&list).unwrap_err();
        assert_eq!(err.line, 3, "{bad:?}");
        assert_eq!(err.text, bad.trim());
        assert!(err.to_string().contains("line 3"), "{err}");
    }
}

/// The checked-in list is valid and holds the proxy's own entry points: a list that
/// lost them (or a generator that wrote demangled names) would link nothing together.
#[test]
fn the_checked_in_list_is_valid_and_covers_the_proxy() {
    let list = include_str!("../../layout/hot-functions.txt");
    let pats = patterns(list).unwrap();
    assert!(pats.len() > 500, "only {} patterns", pats.len());
    for needle in [
        "_ZN11vigil_proxy4main17h*E*",
        // the inbound accept loop and the outbound proxying of HTTP/1.1
        "11vigil_proxy7inbound",
        "11vigil_proxy8outbound",
        // TLS handshakes, both sides
        "6rustls6server",
        "6rustls6client",
    ] {
        assert!(
            pats.iter().any(|p| p.contains(needle)),
            "no pattern with {needle}"
        );
    }
    let unique: std::collections::HashSet<_> = pats.iter().collect();
    assert_eq!(unique.len(), pats.len(), "duplicate patterns");
}
