"""Offline checks of the deployment files, for scripts/check-deploy.sh.

Kubernetes' own kinds are validated by kubernetes-validate against the API's schemas; the custom resources
(Argo Rollouts, Flagger, Istio) have no schema there, so this checks what each tool needs of them and that
they refer to each other correctly. Prints one line per check, `ok` or `FAIL`, and exits 1 on any failure.

    check_deploy.py core RENDERED OUT      write RENDERED's core-kind documents to OUT
    check_deploy.py resources [--rendered=FILE] FILE...
                                           check the custom resources (and cross-references) in FILEs,
                                           FILE from --rendered being kustomize's output of deploy/kubernetes
    check_deploy.py grafana FILE           check a Grafana dashboard
"""

import json
import re
import sys

import yaml

CORE_KINDS = {
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
}
CUSTOM_KINDS = {
    "Rollout": {"argoproj.io/v1alpha1"},
    "AnalysisTemplate": {"argoproj.io/v1alpha1"},
    "VirtualService": {"networking.istio.io/v1", "networking.istio.io/v1beta1"},
    "Canary": {"flagger.app/v1beta1"},
    "MetricTemplate": {"flagger.app/v1beta1"},
}
FLAGGER_HOOK_TYPES = {
    "confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
    "post-rollout", "rollback", "event",
}
ARGO_PROVIDERS = {
    "prometheus", "job", "web", "wavefront", "kayenta", "datadog", "newRelic", "cloudWatch", "graphite",
    "influxdb", "skywalking", "plugin",
}
ROLLOUT_STEPS = {
    "setWeight", "pause", "setCanaryScale", "analysis", "experiment", "setHeaderRoute", "setMirrorRoute",
    "plugin",
}
RULE_ACTIONS = {"ignore", "noise", "tolerance", "unordered", "presence-only", "type-only"}
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$")

failures = 0


def report(ok, what, detail):
    global failures
    if not ok:
        failures += 1
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")


class Problems(list):
    """The problems found in one object; empty when it passes."""

    def need(self, condition, message):
        if not condition:
            self.append(message)
        return condition


def load(paths, rendered=None):
    """(where, document) for every document in the files; where names the rendered file by its source."""
    docs = []
    for path in paths:
        where = "deploy/kubernetes, rendered" if path == rendered else path
        with open(path, encoding="utf-8") as handle:
            for doc in yaml.safe_load_all(handle):
                if doc is not None:
                    docs.append((where, doc))
    return docs


def name_of(doc):
    return (doc.get("metadata") or {}).get("name", "?")


def dig(value, *keys):
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def core(rendered, out):
    docs = load([rendered])
    kept, unknown = [], []
    for _, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CORE_KINDS:
            kept.append(doc)
        elif doc.get("kind") not in CUSTOM_KINDS:
            unknown.append(f"{key[1]} {name_of(doc)} ({key[0]})")
    with open(out, "w", encoding="utf-8") as handle:
        yaml.safe_dump_all(kept, handle, sort_keys=False)
    # A kind neither validated here nor checked below would pass unseen.
    report(not unknown, "kinds", f"{len(docs)} documents, {len(kept)} of Kubernetes' own kinds"
           + (f"; unchecked kinds: {', '.join(unknown)}" if unknown else ""))


# --- Argo Rollouts ---------------------------------------------------------------------------------------

def check_metric(metric, problems, where):
    name = metric.get("name")
    problems.need(isinstance(name, str) and name, f"{where}: metric without a name")
    count = metric.get("count")
    failure_limit = metric.get("failureLimit", 0)
    success_limit = metric.get("consecutiveSuccessLimit", 0)
    inconclusive_limit = metric.get("inconclusiveLimit", 0)
    for field, value in [("count", count or 0), ("failureLimit", failure_limit),
                         ("consecutiveSuccessLimit", success_limit), ("inconclusiveLimit", inconclusive_limit)]:
        problems.need(isinstance(value, int), f"{where}: {field} must be an integer")
    if not all(isinstance(v, int) for v in (count or 0, failure_limit, success_limit, inconclusive_limit)):
        return
    # The rules Argo Rollouts' own validation applies to a metric.
    problems.need(not (success_limit == 0 and failure_limit == -1),
                  f"{where}: failureLimit and consecutiveSuccessLimit cannot both be disabled")
    if count:
        if success_limit >= 0 and failure_limit >= 0:
            problems.need(count >= failure_limit + success_limit,
                          f"{where}: count must be >= failureLimit + consecutiveSuccessLimit")
        problems.need(count >= inconclusive_limit, f"{where}: count must be >= inconclusiveLimit")
    problems.need(not (count and count > 1 and not metric.get("interval")),
                  f"{where}: interval is required when count > 1")
    for field in ("interval", "initialDelay"):
        if field in metric:
            problems.need(DURATION.match(str(metric[field])), f"{where}: {field} is not a duration")
    provider = metric.get("provider")
    if not problems.need(isinstance(provider, dict) and len(provider) == 1,
                         f"{where}: needs exactly one provider"):
        return
    (kind, spec), = provider.items()
    problems.need(kind in ARGO_PROVIDERS, f"{where}: unknown provider {kind}")
    if kind == "web":
        check_web(spec or {}, problems, where)
    problems.need(metric.get("successCondition") or metric.get("failureCondition") or kind == "job",
                  f"{where}: no successCondition or failureCondition")


def check_web(web, problems, where):
    known = {"url", "method", "headers", "body", "jsonBody", "jsonPath", "timeoutSeconds", "insecure",
             "authentication"}
    problems.need(not set(web) - known, f"{where}: unknown web fields {sorted(set(web) - known)}")
    problems.need(re.match(r"^https?://", str(web.get("url", ""))), f"{where}: web.url must be http(s)")
    method = web.get("method", "GET")
    problems.need(method in ("GET", "POST", "PUT"), f"{where}: web.method must be GET, POST or PUT")
    problems.need(not ("body" in web and "jsonBody" in web), f"{where}: body and jsonBody are exclusive")
    problems.need(method != "GET" or not ("body" in web or "jsonBody" in web),
                  f"{where}: a GET cannot have a body")
    problems.need("jsonBody" not in web or isinstance(web["jsonBody"], (dict, list)),
                  f"{where}: jsonBody must be a JSON object or array")
    for header in web.get("headers") or []:
        problems.need(isinstance(header, dict) and set(header) == {"key", "value"},
                      f"{where}: each header needs exactly key and value")
    if "jsonPath" in web:
        problems.need(re.match(r"^\{\$.*\}$", str(web["jsonPath"])), f"{where}: jsonPath must look like {{$...}}")
    if "timeoutSeconds" in web:
        problems.need(isinstance(web["timeoutSeconds"], int), f"{where}: timeoutSeconds must be an integer")


def check_analysis_template(doc, problems, index):
    spec = doc.get("spec") or {}
    metrics = spec.get("metrics")
    if not problems.need(isinstance(metrics, list) and metrics, "spec.metrics is empty"):
        return
    names = [m.get("name") for m in metrics]
    problems.need(len(names) == len(set(names)), "metric names repeat")
    args = {a.get("name"): a for a in spec.get("args") or []}
    for i, metric in enumerate(metrics):
        check_metric(metric, problems, f"metrics[{i}]")
        # Every {{args.x}} must be declared, or the AnalysisRun fails to start.
        for used in re.findall(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}", json.dumps(metric)):
            problems.need(used in args, f"metrics[{i}] uses undeclared arg {used}")
    for name, arg in args.items():
        ref = dig(arg, "valueFrom", "secretKeyRef")
        if ref:
            problems.need(ref.get("key") in index["secret_keys"].get(ref.get("name"), set()),
                          f"arg {name}: no key {ref.get('key')} in Secret {ref.get('name')}")


def check_rollout(doc, problems, index):
    spec = doc.get("spec") or {}
    selector = dig(spec, "selector", "matchLabels") or {}
    labels = dig(spec, "template", "metadata", "labels") or {}
    problems.need(selector, "spec.selector.matchLabels is missing")
    problems.need(selector.items() <= labels.items(), "spec.selector does not match the template's labels")
    problems.need(dig(spec, "template", "spec", "containers"), "spec.template has no containers")
    canary = dig(spec, "strategy", "canary")
    if not problems.need(isinstance(canary, dict), "spec.strategy.canary is missing"):
        return
    steps = canary.get("steps")
    if not problems.need(isinstance(steps, list) and steps, "spec.strategy.canary.steps is empty"):
        return
    stable, preview = canary.get("stableService"), canary.get("canaryService")
    for field, service in [("stableService", stable), ("canaryService", preview)]:
        if service is not None:
            problems.need(service in index["services"], f"{field} {service} is not among the Services")
    problems.need(not stable or stable != preview, "canaryService and stableService must differ")
    routing = canary.get("trafficRouting")
    for i, step in enumerate(steps):
        if not problems.need(isinstance(step, dict) and len(step) == 1 and next(iter(step)) in ROLLOUT_STEPS,
                             f"steps[{i}] is not one known step"):
            continue
        (kind, body), = step.items()
        if kind == "setCanaryScale":
            problems.need(routing, f"steps[{i}]: setCanaryScale requires trafficRouting")
        if kind == "setWeight":
            problems.need(isinstance(body, int) and 0 <= body <= 100, f"steps[{i}]: setWeight must be 0-100")
        if kind == "pause" and body and "duration" in body:
            problems.need(isinstance(body["duration"], int) or DURATION.match(str(body["duration"])),
                          f"steps[{i}]: pause duration is not a duration")
        if kind == "analysis":
            given = {a.get("name") for a in body.get("args") or []}
            for template in body.get("templates") or []:
                name = template.get("templateName")
                declared = index["templates"].get(name)
                if not problems.need(declared is not None, f"steps[{i}]: no AnalysisTemplate {name}"):
                    continue
                # Args a template declares without a value must come from the Rollout.
                for arg in declared:
                    if "value" not in arg and "valueFrom" not in arg:
                        problems.need(arg.get("name") in given,
                                      f"steps[{i}]: {name} needs arg {arg.get('name')}")
    istio = dig(routing, "istio", "virtualService")
    if istio:
        vs = index["virtualservices"].get(istio.get("name"))
        if problems.need(vs is not None, f"trafficRouting: no VirtualService {istio.get('name')}"):
            routes = [r for r in dig(vs, "spec", "http") or [] if r.get("name") in (istio.get("routes") or [None])]
            problems.need(routes, "trafficRouting: the VirtualService has none of the named routes")
            for route in routes:
                hosts = {dig(d, "destination", "host") for d in route.get("route") or []}
                problems.need({stable, preview} <= hosts,
                              f"route {route.get('name')} needs destinations {stable} and {preview}")
                weights = sum(d.get("weight", 0) for d in route.get("route") or [])
                problems.need(weights == 100, f"route {route.get('name')}: weights add to {weights}, not 100")


# --- Istio -----------------------------------------------------------------------------------------------

def service_for(host, namespace, index):
    """The Service a mesh host names (short, namespaced or cluster-local), if it is one of ours."""
    parts = host.split(".")
    if len(parts) == 1 or (len(parts) >= 2 and parts[1] == namespace):
        return index["service_ports"].get(parts[0])
    return None


def check_virtualservice(doc, problems, index):
    spec = doc.get("spec") or {}
    namespace = (doc.get("metadata") or {}).get("namespace", "default")
    problems.need(spec.get("hosts"), "spec.hosts is empty")
    http = spec.get("http")
    if not problems.need(isinstance(http, list) and http, "spec.http is empty"):
        return
    for i, route in enumerate(http):
        destinations = route.get("route")
        if not problems.need(destinations, f"http[{i}].route is empty"):
            continue
        for destination in destinations:
            host = dig(destination, "destination", "host")
            if problems.need(host, f"http[{i}]: a destination without host"):
                problems.need(service_for(host, namespace, index) is not None,
                              f"http[{i}]: destination {host} is not among the Services")
        if "mirror" in route:
            host = dig(route, "mirror", "host")
            if problems.need(host, f"http[{i}].mirror.host is missing"):
                ports = service_for(host, namespace, index)
                if problems.need(ports is not None, f"http[{i}]: mirror {host} is not among the Services"):
                    port = dig(route, "mirror", "port", "number")
                    problems.need(port is None or port in ports, f"http[{i}]: mirror port {port} is not served")
        if "mirrorPercentage" in route:
            value = dig(route, "mirrorPercentage", "value")
            problems.need(isinstance(value, (int, float)) and 0 <= value <= 100,
                          f"http[{i}].mirrorPercentage.value must be 0-100")


# --- Flagger ---------------------------------------------------------------------------------------------

def check_canary(doc, problems, index):
    spec = doc.get("spec") or {}
    target = spec.get("targetRef") or {}
    problems.need(target.get("kind") and target.get("name"), "spec.targetRef needs kind and name")
    problems.need(isinstance(dig(spec, "service", "port"), int), "spec.service.port is missing")
    analysis = spec.get("analysis")
    if not problems.need(isinstance(analysis, dict), "spec.analysis is missing"):
        return
    problems.need(DURATION.match(str(analysis.get("interval", ""))), "analysis.interval is not a duration")
    problems.need(isinstance(analysis.get("threshold"), int), "analysis.threshold is missing")
    for field in ("maxWeight", "stepWeight"):
        if field in analysis:
            problems.need(isinstance(analysis[field], int) and 0 < analysis[field] <= 100,
                          f"analysis.{field} must be 1-100")
    for i, metric in enumerate(analysis.get("metrics") or []):
        problems.need(metric.get("name"), f"metrics[{i}] has no name")
        ref = dig(metric, "templateRef", "name")
        problems.need(ref or metric.get("name") in ("request-success-rate", "request-duration"),
                      f"metrics[{i}] needs a templateRef (or a builtin name)")
        if ref:
            problems.need(ref in index["metrictemplates"], f"metrics[{i}]: no MetricTemplate {ref}")
        problems.need(metric.get("thresholdRange") or "threshold" in metric,
                      f"metrics[{i}] needs thresholdRange")
    for i, hook in enumerate(analysis.get("webhooks") or []):
        problems.need(hook.get("name"), f"webhooks[{i}] has no name")
        problems.need(hook.get("type") in FLAGGER_HOOK_TYPES, f"webhooks[{i}]: unknown type {hook.get('type')}")
        problems.need(re.match(r"^https?://", str(hook.get("url", ""))), f"webhooks[{i}]: url must be http(s)")
        if "timeout" in hook:
            problems.need(DURATION.match(str(hook["timeout"])), f"webhooks[{i}]: timeout is not a duration")
        metadata = hook.get("metadata") or {}
        # Flagger's metadata is a map of strings: a bare number or boolean fails to decode.
        problems.need(all(isinstance(v, str) for v in metadata.values()),
                      f"webhooks[{i}]: metadata values must be strings")


def check_metrictemplate(doc, problems, index):
    spec = doc.get("spec") or {}
    problems.need(dig(spec, "provider", "type"), "spec.provider.type is missing")
    if dig(spec, "provider", "type") == "prometheus":
        problems.need(re.match(r"^https?://", str(dig(spec, "provider", "address") or "")),
                      "spec.provider.address must be http(s)")
    problems.need(isinstance(spec.get("query"), str) and spec["query"].strip(), "spec.query is missing")


# --- shadowdiff's own objects ----------------------------------------------------------------------------

def check_rules(docs):
    """shadowdiff refuses a bad rules file at start; parse it here first."""
    try:
        import tomllib
    except ImportError:  # Python before 3.11
        report(True, "ConfigMap rules", "not parsed (no tomllib in this Python)")
        return
    for _, doc in docs:
        if doc.get("kind") != "ConfigMap":
            continue
        for key, text in (doc.get("data") or {}).items():
            if not key.endswith(".toml"):
                continue
            problems = Problems()
            try:
                rules = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                problems.append(f"not TOML: {error}")
                rules = {}
            problems.need(not set(rules) - {"rule", "sample"}, f"unknown tables {sorted(set(rules) - {'rule', 'sample'})}")
            for i, rule in enumerate(rules.get("rule", [])):
                problems.need(not set(rule) - {"endpoint", "path", "action", "absolute", "relative"},
                              f"rule {i + 1}: unknown keys")
                problems.need(rule.get("path"), f"rule {i + 1}: no path")
                problems.need(rule.get("action") in RULE_ACTIONS, f"rule {i + 1}: unknown action {rule.get('action')}")
                tolerance = "absolute" in rule or "relative" in rule
                problems.need(tolerance == (rule.get("action") == "tolerance"),
                              f"rule {i + 1}: absolute/relative go with action tolerance, and only there")
            for i, sample in enumerate(rules.get("sample", [])):
                problems.need(set(sample) == {"endpoint", "rate"}, f"sample {i + 1}: needs endpoint and rate")
                rate = sample.get("rate")
                problems.need(isinstance(rate, (int, float)) and 0 <= rate <= 1, f"sample {i + 1}: rate must be 0-1")
            report(not problems, f"ConfigMap {name_of(doc)} {key}", "; ".join(problems) or
                   f"{len(rules.get('rule', []))} rules, {len(rules.get('sample', []))} sample rates")


def check_deployment_refs(docs, index):
    for _, doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        problems = Problems()
        pod = dig(doc, "spec", "template", "spec") or {}
        for volume in pod.get("volumes") or []:
            for source, names in [("configMap", index["configmaps"]), ("secret", index["secret_keys"])]:
                ref = dig(volume, source, "name" if source == "configMap" else "secretName")
                if ref:
                    problems.need(ref in names, f"volume {volume.get('name')}: no {source} {ref}")
        for container in pod.get("containers") or []:
            for env in container.get("env") or []:
                ref = dig(env, "valueFrom", "secretKeyRef")
                if ref:
                    problems.need(ref.get("key") in index["secret_keys"].get(ref.get("name"), set()),
                                  f"env {env.get('name')}: no key {ref.get('key')} in Secret {ref.get('name')}")
        report(not problems, f"Deployment {name_of(doc)} references", "; ".join(problems) or "Secrets and ConfigMaps exist")


def build_index(docs):
    index = {"services": set(), "service_ports": {}, "secret_keys": {}, "configmaps": set(),
             "templates": {}, "virtualservices": {}, "metrictemplates": set()}
    for _, doc in docs:
        kind, name = doc.get("kind"), name_of(doc)
        if kind == "Service":
            index["services"].add(name)
            index["service_ports"][name] = {p.get("port") for p in dig(doc, "spec", "ports") or []}
        elif kind == "Secret":
            index["secret_keys"][name] = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
        elif kind == "ConfigMap":
            index["configmaps"].add(name)
        elif kind == "AnalysisTemplate":
            index["templates"][name] = dig(doc, "spec", "args") or []
        elif kind == "VirtualService":
            index["virtualservices"][name] = doc
        elif kind == "MetricTemplate":
            index["metrictemplates"].add(name)
    return index


CHECKS = {
    "Rollout": check_rollout,
    "AnalysisTemplate": check_analysis_template,
    "VirtualService": check_virtualservice,
    "Canary": check_canary,
    "MetricTemplate": check_metrictemplate,
}


def resources(args):
    rendered = next((a.split("=", 1)[1] for a in args if a.startswith("--rendered=")), None)
    paths = [a for a in args if not a.startswith("--rendered=")]
    if rendered:
        paths.insert(0, rendered)
    docs = load(paths, rendered)
    index = build_index(docs)
    seen = 0
    for path, doc in docs:
        kind = doc.get("kind")
        if kind not in CUSTOM_KINDS:
            continue
        seen += 1
        problems = Problems()
        problems.need(doc.get("apiVersion") in CUSTOM_KINDS[kind],
                      f"apiVersion {doc.get('apiVersion')} is not {' or '.join(sorted(CUSTOM_KINDS[kind]))}")
        problems.need(name_of(doc) != "?", "metadata.name is missing")
        CHECKS[kind](doc, problems, index)
        report(not problems, f"{kind} {name_of(doc)}", "; ".join(problems) or f"as {doc.get('apiVersion')} needs ({path})")
    report(seen > 0, "custom resources", f"{seen} checked")
    check_rules(docs)
    check_deployment_refs(docs, index)


# --- Grafana ---------------------------------------------------------------------------------------------

def grafana(path):
    try:
        with open(path, encoding="utf-8") as handle:
            dashboard = json.load(handle)
    except (OSError, ValueError) as error:
        report(False, f"grafana {path}", f"does not parse: {error}")
        return
    problems = Problems()
    problems.need(isinstance(dashboard.get("schemaVersion"), int), "no schemaVersion")
    variables = {v.get("name"): v for v in dig(dashboard, "templating", "list") or []}
    source = variables.get("datasource") or {}
    problems.need(source.get("type") == "datasource" and source.get("query") == "prometheus",
                  "no `datasource` variable of Prometheus data sources")
    panels = []
    for panel in dashboard.get("panels") or []:
        # Rows hold their collapsed panels.
        panels.extend((panel.get("panels") or []) if panel.get("type") == "row" else [panel])
    problems.need(panels, "no panels")
    queries = 0
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        targets = panel.get("targets") or []
        problems.need(targets, f"{title}: no targets")
        for target in targets:
            queries += 1
            problems.need(isinstance(target.get("expr"), str) and target["expr"].strip(), f"{title}: a target without expr")
            uid = dig(target, "datasource", "uid") or dig(panel, "datasource", "uid")
            problems.need(uid == "${datasource}", f"{title}: data source is not ${{datasource}}")
    report(not problems, f"grafana {path}", "; ".join(problems) or f"{len(panels)} panels, {queries} queries")


def main(argv):
    command, args = argv[1], argv[2:]
    if command == "core":
        core(*args)
    elif command == "resources":
        resources(args)
    elif command == "grafana":
        grafana(*args)
    else:
        sys.exit(f"unknown command {command}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
