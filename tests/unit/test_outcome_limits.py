"""Issue 14, item 4: the stated limits on posted outcomes.

At most `MAX_OUTCOMES_PER_REQUEST` (1,000) per request (422 naming ``outcomes``) and
`OUTCOMES_PER_MINUTE` per client (API key, else address) per ingress replica (429
with ``Retry-After``): the bucket on a fake clock, and the ingress's real
``POST /v1/outcomes`` handler with the Calibrator replaced by an in-memory recorder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import OrderedDict

import pytest
from pydantic import ValidationError

from aetheris_ray.outcomes import MAX_OUTCOMES_PER_REQUEST, Outcome, OutcomeBatch


def rows(n: int, asset: str = "A") -> list[dict]:
    start = dt.date(2024, 1, 1)
    return [{"asset": asset, "origin": str(start + dt.timedelta(days=i % 300)), "horizon": 1 + i % 90,
             "price": 100.0 + i} for i in range(n)]


def test_a_request_carries_at_most_1000_outcomes():
    assert MAX_OUTCOMES_PER_REQUEST == 1_000
    assert len(OutcomeBatch(outcomes=rows(1_000)).outcomes) == 1_000
    with pytest.raises(ValidationError) as e:
        OutcomeBatch(outcomes=rows(1_001))
    from aetheris_ray.contract import validation_message

    msg = validation_message(e.value)
    assert msg.startswith("outcomes") and "1000" in msg.replace(",", ""), msg


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_refills_per_minute_and_separates_clients():
    from deployments.ratelimit import OutcomeRateLimit

    clock = Clock()
    lim = OutcomeRateLimit(per_minute=600, clock=clock)
    assert lim.take("k1", 600) is None
    wait = lim.take("k1", 10)
    assert wait == 1  # 10 outcomes at 10 per second
    assert lim.take("k1", 300) == 30
    assert lim.take("k2", 600) is None  # another client has its own bucket
    clock.t += 30
    assert lim.take("k1", 300) is None and lim.take("k1", 1) is not None
    assert lim.take("k1", 601) == 60  # more than a bucket: the wait to refill a full one
    clock.t += 3600
    assert lim.take("k1", 600) is None  # a long pause does not bank more than a minute


def test_client_id_hashes_the_key():
    from deployments.ratelimit import client_id

    a = client_id("s3cret", "10.0.0.1")
    assert a.startswith("key:") and "s3cret" not in a
    assert a == client_id("s3cret", "10.0.0.2") != client_id("other", "10.0.0.1")
    assert client_id(None, "10.0.0.1") == "addr:10.0.0.1"




class _Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *a):
        async def run():
            return self.fn(*a)
        return run()


class FakeCalibrator:
    def __init__(self) -> None:
        self.stored: list = []
        self.record = _Remote(self._record)

    def _record(self, outcomes):
        self.stored.extend(outcomes)
        return {"accepted": len(outcomes), "new": len(outcomes), "stored": len(self.stored), "epoch": str(len(self.stored))}


class FakeFeatures:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.prescore = _Remote(lambda asset: self.asked.append(asset) or 0)


def _ingress(per_minute: int):
    from deployments import ingress
    from deployments.ratelimit import OutcomeRateLimit

    inst = ingress.Ingress.func_or_class.__new__(ingress.Ingress.func_or_class)
    inst._assets, inst._epoch, inst._prepared = {"A"}, None, OrderedDict()
    inst.calibrator = FakeCalibrator()
    inst.features = FakeFeatures()
    inst._outcome_limit = OutcomeRateLimit(per_minute)
    return inst


def _request(key: str | None, host: str = "10.1.2.3"):
    from starlette.requests import Request

    headers = [(b"x-api-key", key.encode())] if key else []
    return Request({"type": "http", "method": "POST", "path": "/v1/outcomes", "headers": headers,
                    "client": (host, 5555), "query_string": b""})


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore:coroutine .*ASGIIngressWrapper:RuntimeWarning")
def test_ingress_answers_429_with_retry_after_and_stores_nothing_refused():
    ing = _ingress(per_minute=50)
    def post(n, key, host="10.1.2.3"):
        async def go():
            r = await ing.outcomes(OutcomeBatch(outcomes=rows(n)), _request(key, host))
            await asyncio.gather(*getattr(ing, "_background", ()))  # the background scoring request
            return r
        return asyncio.run(go())
    ok = post(40, "k1")
    assert ok.status_code == 200 and json.loads(ok.body)["accepted"] == 40
    assert ing.features.asked == ["A"]  # the new outcomes are scored in the background
    refused = post(20, "k1")
    assert refused.status_code == 429, refused.body
    body = json.loads(refused.body)
    assert body["error"] == "RateLimited" and body["field"] == "outcomes"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(ing.calibrator.stored) == 40  # the refused batch was not recorded
    assert post(20, "k2").status_code == 200  # another key is not held back
    assert post(30, None, "10.9.9.9").status_code == 200 and post(30, None, "10.9.9.9").status_code == 429


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore:coroutine .*ASGIIngressWrapper:RuntimeWarning")
def test_unknown_asset_is_404_before_the_limit_counts():
    ing = _ingress(per_minute=10)
    bad = asyncio.run(ing.outcomes(OutcomeBatch(outcomes=[Outcome(**rows(1, asset="ZZZ")[0])] * 10),
                                   _request("k1")))
    assert bad.status_code == 404 and json.loads(bad.body)["field"] == "outcomes.0.asset"
    assert asyncio.run(ing.outcomes(OutcomeBatch(outcomes=rows(10)), _request("k1"))).status_code == 200


@pytest.mark.ray
@pytest.mark.slow
def test_features_prescore_scores_the_posted_outcomes(tmp_path):
    """The Features replica's background scoring, on its real method (the Calibrator and the model loader faked)."""
    from aetheris_ray import pairs
    from aetheris_ray.config import load_settings
    from aetheris_ray.data import SyntheticSource
    from aetheris_ray.history import positive_closes
    from deployments import models

    hist = SyntheticSource(seed=0).history("SYN-ETH")
    close = positive_closes(hist)
    posted = [{"asset": "SYN-ETH", "origin": str(close.index[-60 - i].date()), "horizon": 5,
               "price": float(close.iloc[-55 - i])} for i in range(3)]
    feats = models.Features.func_or_class.__new__(models.Features.func_or_class)
    feats.settings, feats.assets = load_settings(home=tmp_path), ["SYN-ETH"]
    feats.calibrator = type("C", (), {"rows": _Remote(lambda asset: posted if asset == "SYN-ETH" else [])})()

    async def get_model(key):
        return models.AssetModel(asset="SYN-ETH", model_version=key.rpartition(":")[2], history=hist)

    feats.get_model = get_model
    pairs.clear()
    assert asyncio.run(feats.prescore("SYN-ETH")) == 3
    assert asyncio.run(feats.prescore("SYN-ETH")) == 0  # kept: nothing left to score
    assert asyncio.run(feats.prescore("NOPE")) == 0
    assert list((tmp_path / "state" / "engine" / "SYN-ETH").glob("outcome-pits-*.json"))
