#!/usr/bin/env bash
# test_terraform: deploy/terraform without Terraform (it cannot be installed on the build machines).
#   - every .tf file parses (HCL v2, via @cdktf/hcl2json from npm, installed into this test's temp dir) and
#     every variable, local, resource, data source, module and module output reference resolves; module calls
#     pass only declared variables and all required ones; formatting is terraform fmt's
#     (tests/terraform/check_hcl.js), and the checker catches each kind of mistake it claims to;
#   - the core's sink filter default equals `sluice sink-filter workflows/` (generated, never hand-edited);
#   - every serve flag the Terraform and the systemd unit pass exists in `sluice serve --help`;
#   - deploy/systemd/sluice.service passes systemd-analyze verify; the VM's startup script is valid bash, and its
#     sluice.env block keeps the operator's lines across boots;
#   - `sluice sink-filter --format terraform` prints a tfvars line for a variable the roots declare.
# Skips (printing SKIP) only when the npm registry cannot be reached.
source "$(dirname "$0")/emu_lib.sh"
SRC=${SLUICE_SRC:?}
TF="$SRC/deploy/terraform"
HCL_PKG=@cdktf/hcl2json@0.21.0

# Regression (issue 17, finding 16): the VM's startup script rewrote /etc/sluice/sluice.env at every boot, so an
# operator token put there (docs/deploying.md) was lost at the next boot. Its sluice.env block, rendered and run
# twice against a copy of the file: Terraform's keys are set once each, the operator's lines stay, mode 0600.
# (Needs no npm: runs before the skip below.)
tftpl="$TF/modules/vm/startup.sh.tftpl"
mkdir -p "$TMPD/etc"
sed -n '/^# BEGIN sluice.env/,/^# END sluice.env/p' "$tftpl" |
    sed -e 's|\${port}|9090|g' -e 's|\${serve_args}|--audience a --allow-email p@x|g' \
        -e "s|/etc/sluice/sluice.env|$TMPD/etc/sluice.env|g" >"$TMPD/env-block.sh"
grep -q 'sluice.env' "$TMPD/env-block.sh" && ok "startup.sh.tftpl has its sluice.env block" \
    || fail "startup.sh.tftpl: no '# BEGIN sluice.env' ... '# END sluice.env' block"
printf 'PORT=8080\nSLUICE_OPERATOR_TOKEN=operator-secret\nSLUICE_PROJECT=my-project\n' >"$TMPD/etc/sluice.env"
chmod 0644 "$TMPD/etc/sluice.env"
for boot in 1 2; do
    bash -euo pipefail "$TMPD/env-block.sh" 2>"$TMPD/env-block.err" || fail "boot $boot: the sluice.env block failed: $(cat "$TMPD/env-block.err")"
done
expect_eq "the operator's token survives two boots" "$(grep -c '^SLUICE_OPERATOR_TOKEN=operator-secret$' "$TMPD/etc/sluice.env")" 1
expect_eq "the operator's project survives two boots" "$(grep -c '^SLUICE_PROJECT=my-project$' "$TMPD/etc/sluice.env")" 1
expect_eq "PORT is Terraform's, once" "$(grep '^PORT=' "$TMPD/etc/sluice.env")" "PORT=9090"
expect_eq "SLUICE_SERVE_ARGS is Terraform's, once" "$(grep '^SLUICE_SERVE_ARGS=' "$TMPD/etc/sluice.env")" \
    'SLUICE_SERVE_ARGS="--audience a --allow-email p@x"'
expect_eq "sluice.env is root-only" "$(stat -c %a "$TMPD/etc/sluice.env")" 600
rm -f "$TMPD/etc/sluice.env"
bash -euo pipefail "$TMPD/env-block.sh" && expect_eq "a first boot writes Terraform's two keys" \
    "$(cat "$TMPD/etc/sluice.env")" "$(printf 'PORT=9090\nSLUICE_SERVE_ARGS="--audience a --allow-email p@x"')"

if ! npm view "$HCL_PKG" version >"$TMPD/npm-view.out" 2>&1; then
    echo "SKIP: the npm registry is unreachable, so $HCL_PKG cannot be installed: $(tail -1 "$TMPD/npm-view.out")"
    exit 0
fi
npm install --prefix "$TMPD/hcl" --no-audit --no-fund --silent "$HCL_PKG" >"$TMPD/npm.out" 2>&1 \
    || { cat "$TMPD/npm.out" >&2; echo "FAIL: npm install $HCL_PKG" >&2; exit 1; }
check() { NODE_PATH="$TMPD/hcl/node_modules" node "$SRC/tests/terraform/check_hcl.js" "$@"; }

check "$TF" >"$TMPD/check.out" 2>&1 && ok "deploy/terraform: $(tail -1 "$TMPD/check.out")" \
    || fail "deploy/terraform: $(cat "$TMPD/check.out")"
for d in modules/core modules/cloud-run modules/vm cloud-run vm serverless; do
    [ -f "$TF/$d/main.tf" ] && [ -f "$TF/$d/variables.tf" ] && [ -f "$TF/$d/outputs.tf" ] && ok "$d: main, variables, outputs" \
        || fail "$d lacks main.tf, variables.tf or outputs.tf"
done

# the checker finds what it claims to: one mistake per copy
mistake() { # WHAT FILE SED-EXPR EXPECTED-MESSAGE
    rm -rf "$TMPD/bad"; cp -r "$TF" "$TMPD/bad"
    sed -i "$3" "$TMPD/bad/$2"
    cmp -s "$TF/$2" "$TMPD/bad/$2" && { fail "mistake '$1' changed nothing"; return; }
    if check "$TMPD/bad" >"$TMPD/bad.out" 2>&1; then fail "checker missed: $1"
    elif grep -q -- "$4" "$TMPD/bad.out"; then ok "checker catches: $1"
    else fail "checker on '$1': $(cat "$TMPD/bad.out")"; fi
}
mistake "an undeclared variable" modules/core/main.tf 's/project_id = var.project/project_id = var.projet/' "var.projet is not declared"
mistake "an undeclared local" modules/cloud-run/main.tf 's/args  = local.args/args  = local.argz/' "local.argz is not declared"
mistake "an undeclared resource" modules/core/main.tf 's/google_pubsub_topic.dead_letter\[0\].id/google_pubsub_topic.dead_letters[0].id/' "google_pubsub_topic.dead_letters is not declared"
mistake "an undeclared data source" modules/core/main.tf 's/data.google_project.this.number/data.google_project.that.number/' "data.google_project.that is not declared"
mistake "a missing module output" modules/cloud-run/main.tf 's/module.core.pusher_email/module.core.push_email/' "has no output push_email"
mistake "an unknown module argument" cloud-run/main.tf 's/^  schedule_tick  /  schedule_tock  /' "passes schedule_tock"
mistake "a missing required module argument" vm/main.tf '/^  zone  /d' "does not pass required variable zone"
mistake "a missing template file" modules/vm/main.tf 's/startup.sh.tftpl/startup.tftpl/' "does not exist"
mistake "a template variable not passed" modules/vm/main.tf '/^      port       = var.port/d' "uses port"
mistake "a misaligned =" modules/core/main.tf 's/^  account_id   = var.name/  account_id = var.name/' "terraform fmt puts it"
mistake "a wrong indentation" modules/core/main.tf 's/^    attribute = "type"/   attribute = "type"/' "terraform fmt indents"
mistake "a syntax error" modules/core/outputs.tf 's/^output "topic" {/output "topic" {{/' "does not parse"

# the sink filter is the one sluice computes for the shipped workflows
want=$("$SLUICE_BIN" sink-filter "$SRC/workflows")
got=$(cd "$TMPD/hcl" && node -e '
const { parse } = require("@cdktf/hcl2json");
const fs = require("fs");
parse("f.tf", fs.readFileSync(process.argv[1], "utf8")).then((d) => console.log(d.variable.sink_filter[0].default));
' "$TF/modules/core/sink_filter.tf")
expect_eq "sink_filter.tf's default is sluice sink-filter workflows/" "$got" "$want"
grep -qxF "  default     = $("$SLUICE_BIN" sink-filter --format terraform "$SRC/workflows" | sed 's/^sink_filter = //')" \
    "$TF/modules/core/sink_filter.tf" && ok "and is byte for byte the --format terraform value" \
    || fail "sink_filter.tf is stale: regenerate it from sluice sink-filter --format terraform workflows/"

# Regression (issue 17, finding 16): --format terraform printed `filter = ...`; the roots' variable is sink_filter.
# Its line, as a terraform.tfvars, parses to exactly one key that both roots declare, whose value is the filter.
"$SLUICE_BIN" sink-filter --format terraform "$SRC/workflows" >"$TMPD/terraform.tfvars"
got=$(cd "$TMPD/hcl" && node -e '
const { parse } = require("@cdktf/hcl2json");
const fs = require("fs");
parse("terraform.tfvars", fs.readFileSync(process.argv[1], "utf8")).then((d) => {
  const keys = Object.keys(d);
  console.log(keys.join(",") + "\n" + d[keys[0]]);
});
' "$TMPD/terraform.tfvars")
expect_eq "sink-filter --format terraform is a tfvars line for sink_filter" "$got" "$(printf 'sink_filter\n%s' "$want")"
for root in cloud-run vm serverless; do
    grep -q '^variable "sink_filter" {' "$TF/$root/variables.tf" && ok "$root declares variable sink_filter" \
        || fail "$root/variables.tf has no variable sink_filter (what sink-filter --format terraform prints)"
done

# the VM shape reads its events by pull: a pull subscription (no push_config) on the events topic, Sluice's
# identity subscriber on it and on nothing wider, the VM passing --subscription, and no push subscription
(cd "$TMPD/hcl" && node -e '
const { parse } = require("@cdktf/hcl2json");
const fs = require("fs");
const tf = (f) => parse(f, fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
(async () => {
  const core = await tf("modules/core/main.tf"), vm = await tf("modules/vm/main.tf");
  const sub = core.resource.google_pubsub_subscription;
  const say = (ok, what) => console.log((ok ? "ok " : "FAIL ") + what);
  say(sub.pull && !sub.pull[0].push_config && sub.pull[0].topic.includes("google_pubsub_topic.events"),
      "core: a pull subscription without push_config on the events topic");
  say(sub.pull && sub.pull[0].count === "${var.pull ? 1 : 0}", "core: the pull subscription exists only with pull");
  const m = (core.resource.google_pubsub_subscription_iam_member || {}).sluice_subscriber;
  say(m && m[0].role === "roles/pubsub.subscriber" && m[0].member === "${local.sluice}" &&
      m[0].subscription.includes("google_pubsub_subscription.pull"), "core: Sluice is roles/pubsub.subscriber on it");
  const roles = Object.values(core.resource.google_project_iam_member || {}).map((r) => r[0].role);
  say(!roles.includes("roles/pubsub.subscriber"), "core: and not on the whole project");
  say(/local\.push\s*=\s*var\.endpoint_url != null && !var\.pull/.test(JSON.stringify(core.locals)) ||
      (core.locals[0].push || "").includes("!var.pull"), "core: no push subscription with pull");
  const mod = vm.module.core[0];
  say(mod.pull === true, "vm: the core is asked for pull");
  say(JSON.stringify(vm.locals).includes("--subscription") && JSON.stringify(vm.locals).includes("module.core.pull_subscription"),
      "vm: serve gets --subscription module.core.pull_subscription");
  say(!(vm.resource.google_compute_firewall || {}).sluice || vm.resource.google_compute_firewall.sluice[0].count.includes("ingress_source_ranges"),
      "vm: no firewall opening unless ingress_source_ranges asks");
})();
' "$TF") >"$TMPD/pull.out" 2>&1
while read -r verdict what; do
    if [ "$verdict" = ok ]; then ok "$what"; else fail "$what"; fi
done <"$TMPD/pull.out"
grep -q . "$TMPD/pull.out" || fail "the pull checks printed nothing"

# the serverless shape scales to zero (docs/cost.md): no minimum instance, CPU only during requests, events acted
# on inside their push (--process-in-request, held for less than the push's 30 s ack deadline), a reconcile tick
# every minute, its state in Firestore (Native) with Sluice's identity as roles/datastore.user; no Cloud SQL, no VM
(cd "$TMPD/hcl" && node -e '
const { parse } = require("@cdktf/hcl2json");
const fs = require("fs");
const tf = (f) => parse(f, fs.readFileSync(process.argv[1] + "/" + f, "utf8"));
(async () => {
  const m = await tf("serverless/main.tf"), v = await tf("serverless/variables.tf");
  const say = (ok, what) => console.log((ok ? "ok " : "FAIL ") + what);
  const r = m.resource || {};
  const svc = ((r.google_cloud_run_v2_service || {}).sluice || [])[0];
  const tpl = svc && svc.template[0];
  say(tpl && tpl.scaling[0].min_instance_count === 0, "serverless: min_instance_count = 0");
  say(tpl && tpl.containers[0].resources[0].cpu_idle === true, "serverless: cpu_idle = true (CPU only during requests)");
  const args = JSON.stringify(m.locals);
  const hold = /--process-in-request",\s*"(\d+)s"/.exec(m.locals[0].args);
  say(hold && Number(hold[1]) < 30, "serverless: --process-in-request below the 30 s ack deadline");
  say(m.locals[0].args.includes("local.store") && m.locals[0].store.startsWith("firestore://${var.project}") &&
      m.locals[0].store.includes("google_firestore_database.store.name"), "serverless: --store firestore://PROJECT[/DATABASE]");
  say(v.variable.firestore_database[0].default === "(default)", "serverless: the (default) database (the free quota)");
  const db = ((r.google_firestore_database || {}).store || [])[0];
  say(db && db.type === "FIRESTORE_NATIVE", "serverless: a google_firestore_database in Native mode");
  const core = m.module.core[0];
  say(core.source === "../modules/core" && JSON.stringify(core.extra_sluice_roles) === "[\"roles/datastore.user\"]",
      "serverless: the core module, Sluice as roles/datastore.user");
  say(!core.pull && core.endpoint_url === "${local.url}", "serverless: events pushed to the service (log sink -> Pub/Sub push)");
  say(v.variable.reconcile_schedule[0].default === "* * * * *" && core.reconcile_schedule === "${var.reconcile_schedule}",
      "serverless: the reconcile job every minute");
  say(v.variable.schedule_tick[0].default === "* * * * *" && core.schedule_tick === "${var.schedule_tick}",
      "serverless: the schedule tick every minute (scaled to zero, serve has no clock of its own)");
  const all = JSON.stringify(m);
  say(!all.includes("google_sql_database_instance") && !all.includes("google_compute_instance") && !all.includes("cloudsql"),
      "serverless: no Cloud SQL, no VM");
})();
' "$TF") >"$TMPD/serverless.out" 2>&1
while read -r verdict what; do
    if [ "$verdict" = ok ]; then ok "$what"; else fail "$what"; fi
done <"$TMPD/serverless.out"
grep -q "no Cloud SQL" "$TMPD/serverless.out" || fail "the serverless checks did not run: $(cat "$TMPD/serverless.out")"

# serve flags used by the deployment exist
"$SLUICE_BIN" serve --help >"$TMPD/serve-help.txt" || true
flags=$(grep -ohE '"--[a-z-]+"' "$TF"/modules/*/main.tf "$TF"/serverless/main.tf | tr -d '"' | sort -u)
flags+=" $(grep -oE -- '--[a-z-]+' "$SRC/deploy/systemd/sluice.service" | sort -u | tr '\n' ' ')"
for f in $flags; do
    grep -qE -- "(^|[ ,])$f( |,|$)" "$TMPD/serve-help.txt" && ok "serve knows $f" || fail "serve --help lacks $f (used by deploy/)"
done

# the VM's startup script is valid bash once rendered (template directives dropped, variables filled in)
sed -e 's/%{[^}]*}//g' -e 's/\${[a-z_]*}/x/g' "$TF/modules/vm/startup.sh.tftpl" >"$TMPD/startup.sh"
bash -n "$TMPD/startup.sh" 2>"$TMPD/startup.err" && ok "startup.sh.tftpl renders to valid bash" \
    || fail "startup.sh.tftpl: $(cat "$TMPD/startup.err")"
grep -q 'sluice.service' "$TMPD/startup.sh" && ok "the startup script installs sluice.service" || fail "no unit in startup script"

# the systemd unit (ExecStart pointed at the build's binary: verify checks that it exists)
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/sluice|$SLUICE_BIN|" "$SRC/deploy/systemd/sluice.service" >"$TMPD/sluice.service"
    out=$(systemd-analyze verify "$TMPD/sluice.service" 2>&1) && [ -z "$out" ] && ok "systemd-analyze verify sluice.service" \
        || fail "systemd-analyze verify: $out"
else
    fail "systemd-analyze is missing (Debian: systemd)"
fi
finish
