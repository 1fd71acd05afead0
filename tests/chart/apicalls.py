"""The Kubernetes API calls Headrace's code makes, read from its source, as (group, resource, verb).

Application calls come from the code itself (an `ast` walk), so a new call shows up here without anyone
remembering to list it:

- operator: every `Resource("group/version", "plural")` constant of `headrace/operator/kube.py`, and
  every `<...>.kube.<method>(<CONSTANT>, ...)` call in `headrace/operator/`, with each KubeClient
  method's verbs taken from the HTTP methods it sends (`request("POST", ...)`) and the methods it calls.
  A call it cannot map (a raw `kube.request(...)` outside the client) fails loudly instead of hiding;
- API: every `/apis/<group>/<version>/<plural>` path constant in `headrace/api/` that is POSTed.

Framework calls are kopf's, which no `ast` walk of our code can see. They follow from how kopf 1.x works
(kopf/_cogs/structs/references.py and clients/patching.py): it lists and watches CRDs and namespaces to
find what to serve, lists/watches/patches each resource it has handlers for (finalizer, progress
annotations), patches `/status` separately when the CRD has a status subresource, and creates core/v1
Events for `kopf.event()` and handler failures.
"""

import ast
from pathlib import Path

Call = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def _group(group_version: str) -> str:
    return group_version.rsplit("/", 1)[0] if "/" in group_version else ""


def _kube_resources(kube: ast.Module) -> dict[str, tuple[str, str]]:
    """NAME -> (group, plural) of `NAME = Resource("batch/v1", "jobs")` constants."""
    found = {}
    for node in kube.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "Resource"
        ):
            group_version, plural = (ast.literal_eval(arg) for arg in node.value.args[:2])
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = (_group(group_version), plural)
    return found


def _client_verbs(kube: ast.Module, class_name: str = "KubeClient") -> dict[str, set[str]]:
    """method -> Kubernetes verbs it uses, following calls between the client's own methods."""
    (client,) = [n for n in kube.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for method in client.body:
        if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        direct[method.name], calls[method.name] = set(), set()
        for node in ast.walk(method):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and first.value in HTTP_VERBS:  # self.request("POST", ...)
                direct[method.name].add(HTTP_VERBS[str(first.value)])
            elif isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
                calls[method.name].add(node.func.attr)
    verbs: dict[str, set[str]] = {}

    def resolve(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set(direct.get(name, set()))
        for callee in calls.get(name, set()) - seen:
            found |= resolve(callee, seen | {name})
        return found

    for name in direct:
        verbs[name] = resolve(name)
    if "list" in verbs:  # a GET of a collection is the `list` verb, not `get`
        verbs["list"] = {"list"}
    return verbs


def _is_kube(node: ast.expr) -> bool:
    """`op.kube`, or a plain `kube` (a KubeClient passed as an argument)."""
    return (isinstance(node, ast.Attribute) and node.attr == "kube") or (
        isinstance(node, ast.Name) and node.id == "kube"
    )


def operator_application_calls(package: Path) -> set[Call]:
    """Calls the operator's own client makes on the objects it owns."""
    kube = ast.parse((package / "kube.py").read_text())
    resources = _kube_resources(kube)
    verbs = _client_verbs(kube)
    found: set[Call] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and _is_kube(node.func.value)
                and node.args
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in resources
            ):
                group, plural = resources[node.args[0].id]
                found |= {(group, plural, verb) for verb in verbs[node.func.attr]}
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and _is_kube(node.func.value)
                and node.func.attr not in verbs
                and node.func.attr not in {"connect", "close"}
            ):
                raise AssertionError(f"{path.name}: kube.{node.func.attr}(...) is a call apicalls.py cannot map")
    return found


def api_calls(package: Path) -> set[Call]:
    """Calls to `/apis/<group>/<version>/<plural>` path constants used in the API package.

    The verb follows from the methods the package calls on its Kubernetes client (`headrace/kubeapi.py`,
    held as `self._kube`; or a raw httpx client, `self._client`): today only `create` (reviews are POSTed).
    Should another method appear, this refuses to guess and says so.
    """
    constants: dict[str, str] = {}
    used: set[str] = set()
    methods: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                if isinstance(value, str) and value.startswith("/apis/"):
                    constants.update({t.id: value for t in node.targets if isinstance(t, ast.Name)})
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr in {"_client", "_kube"}
                and node.func.attr in {"get", "post", "create", "put", "patch", "delete", "request", "stream"}
            ):
                methods.add("create" if node.func.attr == "post" else node.func.attr)
    if not constants:
        return set()
    if methods != {"create"}:
        raise AssertionError(f"the API sends {sorted(methods)} to the API server: teach apicalls.py their verbs")
    found: set[Call] = set()
    for name, value in constants.items():
        if name in used:
            _, _, group, _version, plural = value.split("/")[:5]
            found.add((group, plural, "create"))
    return found
