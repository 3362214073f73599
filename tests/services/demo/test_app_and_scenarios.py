"""The application description and the scenario files: what loads, and what is refused with which field."""

import tomllib

import pytest

from services.demo.app import DEMO_APP, load_app, parse_app
from services.demo.scenario import bundled_scenarios, load_scenario, parse_scenario


def test_the_demo_app_has_the_social_network_services_and_request_paths() -> None:
    app = load_app()
    assert len(app.services) >= 15
    assert {
        "nginx-web-server",
        "compose-post-service",
        "home-timeline-service",
        "social-graph-mongodb",
    } <= set(app.services)
    paths = {request.name: request.services() for request in app.requests}
    assert set(paths) == {"read-home-timeline", "read-user-timeline", "compose-post", "follow"}
    # Different request types take different paths through the graph.
    assert "text-service" in paths["compose-post"] and "text-service" not in paths["read-home-timeline"]
    assert "social-graph-mongodb" in paths["follow"] and "social-graph-mongodb" not in paths["compose-post"]


def _demo_document() -> dict:
    with open(DEMO_APP, "rb") as handle:
        return tomllib.load(handle)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["requests"]["follow"]["calls"].update({"user-service": [["no-such-service"]]}),
            "no-such-service",
        ),
        (
            lambda d: d["requests"]["follow"]["calls"].update({"user-memcached": [["social-graph-service"]]}),
            "loops",
        ),
        (lambda d: d["services"]["text-service"].update(concurrency=0), "services.text-service.concurrency"),
        (lambda d: d["services"]["text-service"].update(colour="red"), "unknown field"),
        (lambda d: d["requests"]["follow"].pop("entry"), "requests.follow.entry"),
        (
            lambda d: d["requests"]["follow"]["calls"].update(
                {"user-service": [[{"service": "user-memcached", "probability": 2}]]}
            ),
            "probability",
        ),
    ],
)
def test_a_wrong_app_description_names_the_field(change, message: str) -> None:
    document = _demo_document()
    change(document)
    with pytest.raises(ValueError, match=message):
        parse_app(document)


def test_every_bundled_scenario_loads_and_replays_its_trace_scaled_to_its_mean() -> None:
    names = bundled_scenarios()
    assert {"diurnal", "flash-crowd", "request-path", "network", "interference", "failure-crash"} <= set(
        names
    )
    kinds = set()
    for name in names:
        scenario = load_scenario(name)
        curve = scenario.rate_curve()
        assert len(curve) == int(scenario.duration_seconds)
        assert sum(curve) / len(curve) == pytest.approx(scenario.workload.mean_rps, rel=1e-6)
        kinds.update(event.kind for event in scenario.events)
        kinds.update(dynamic.value for dynamic in scenario.dynamics)
    # One scenario per kind of dynamics the survey names.
    assert {
        "workload",
        "request_path",
        "network",
        "interference",
        "failure",
        "resource_availability",
    } <= kinds
    flash = load_scenario("flash-crowd").rate_curve()
    assert max(flash) > 2.5 * sorted(flash)[len(flash) // 2]  # a real burst, not a flat line


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"events": [{"at": 5, "kind": "earthquake"}]}, r"events\[0\].kind"),
        ({"events": [{"at": 5, "kind": "crash"}]}, "needs"),
        ({"events": [{"at": -1, "kind": "node_down", "node": "node-0"}]}, r"events\[0\].at"),
        ({"events": [{"at": 5, "kind": "network", "nodes": ["node-0"]}]}, "two nodes"),
        ({"workload": {"mean_rps": 0}}, "workload.mean_rps"),
        ({"dynamics": ["weather"]}, "dynamics"),
        ({"trace_sampling": 0}, "scenario.trace_sampling"),
        ({"trace_sampling": 1.5}, "scenario.trace_sampling"),
    ],
)
def test_a_wrong_scenario_names_the_field(document: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scenario(document, "broken")


def test_an_unknown_scenario_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ValueError, match="diurnal"):
        load_scenario("no-such-scenario")
