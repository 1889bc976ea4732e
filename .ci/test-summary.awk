# The summary at the end of `make test` (.ci/test.sh), from cargo test's output: each
# test binary starts with "Running <target> (<path>)" or "Doc-tests <crate>" and ends with
# "test result: ..."; a failed one is followed by "error: test failed, to rerun pass
# `<args>`". A binary without a result line crashed or was killed.
# Usage: awk -v elapsed=SECONDS -f .ci/test-summary.awk CARGO_TEST_OUTPUT
function close_binary() {
    if (cur != "" && !done[cur]) { crashed[cur] = 1; bad[cur] = 1 }
}
/^ +Running / {
    close_binary()
    path = $NF; gsub(/[()]/, "", path); n = split(path, parts, "/")
    bin = parts[n]; sub(/-[0-9a-f]+$/, "", bin)
    target = $2; for (i = 3; i < NF; i++) target = target " " $i
    cur = bin ": " target; order[++binaries] = cur; next
}
/^ +Doc-tests / { close_binary(); cur = "doc-tests " $2; order[++binaries] = cur; next }
/^test .* \.\.\. FAILED$/ {
    name = $0; sub(/^test /, "", name); sub(/ \.\.\. FAILED$/, "", name)
    failed_tests[cur] = failed_tests[cur] "\n        " name; bad[cur] = 1; next
}
/^test result: / {
    done[cur] = 1
    for (i = 1; i <= NF; i++) {
        if ($(i + 1) ~ /^passed/) passed += $i
        if ($(i + 1) ~ /^failed/) failed += $i
        if ($(i + 1) ~ /^ignored/) ignored += $i
    }
    if ($3 == "FAILED.") bad[cur] = 1
    next
}
/^error: test failed, to rerun pass / {
    hint = $0; sub(/.*pass /, "", hint); gsub(/`/, "", hint); rerun[cur] = hint; bad[cur] = 1
}
END {
    close_binary()
    nbad = 0
    for (i = 1; i <= binaries; i++) if (bad[order[i]]) nbad++
    printf "\n==> summary: %d test binaries, %d tests passed, %d failed, %d ignored, in %dm%02ds\n",
        binaries, passed, failed, ignored, elapsed / 60, elapsed % 60
    if (nbad == 0) { print "    every test binary passed"; exit }
    printf "    FAILED: %d of %d test binaries\n", nbad, binaries
    for (i = 1; i <= binaries; i++) {
        b = order[i]
        if (!bad[b]) continue
        printf "    - %s%s%s\n", b, (rerun[b] != "" ? "  (rerun: cargo test " rerun[b] ")" : ""),
            (crashed[b] ? "  no test result: it crashed or was killed" : "")
        if (failed_tests[b] != "") printf "      failed tests:%s\n", failed_tests[b]
    }
}
