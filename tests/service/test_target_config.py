"""A job that gives the user's fla config.json: the proxy is that architecture at the base width, and the
recommendation for its hidden_size describes the user's model, MLP size included (issue 17)."""
from __future__ import annotations

from gdn.config import count_params
from gdn.fla_config import gdn_config_from_fla
from helpers import assert_problem, run_trials_through_crud, tiny_job

FLA = {"model_type": "gated_deltanet", "hidden_size": 256, "num_hidden_layers": 1, "num_heads": 6, "head_dim": 32,
       "expand_v": 2, "hidden_ratio": 4, "vocab_size": 256, "tie_word_embeddings": True, "fuse_norm": True,
       "attn_mode": "chunk", "initializer_range": 0.02}


def test_a_job_from_an_fla_config_recommends_for_that_model(any_env, make_client, auth):
    client = make_client(any_env)
    r = client.post("/v1/jobs", json=tiny_job(model={"width": 64}, target_config=FLA), headers=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    proxy = job["spec"]["model"]
    assert (proxy["width"], proxy["mlp_multiple_of"], proxy["key_ratio"]) == (64, 256, 0.75)
    run_trials_through_crud(any_env, job["id"], [3.1, 2.7, 2.9])
    rec = client.get(f"/v1/jobs/{job['id']}/recommendation", params={"width": 256}, headers=auth).json()
    expected = gdn_config_from_fla(FLA)
    assert rec["target_model"] == {**expected.shapes(), "num_params": count_params(expected)}
    assert rec["target_model"]["mlp_hidden"] == 768 and rec["proxy_model"]["mlp_hidden"] == 256


def test_what_the_model_cannot_be_is_a_422(any_env, make_client, auth):
    client = make_client(any_env)
    for target, model, says in [
            ({**FLA, "tie_word_embeddings": False}, {"width": 64}, "untied-zero or untied-scaled"),
            ({**FLA, "num_v_heads": 12}, {"width": 64}, "grouped value heads"),
            ({**FLA, "attn": {"layers": [0], "num_heads": 4}}, {"width": 64}, "softmax attention"),
            (FLA, {"width": 64, "depth": 3}, "width_axis only")]:
        body = assert_problem(client.post("/v1/jobs", json=tiny_job(model=model, target_config=target),
                                          headers=auth), 422, "validation-error")
        assert says in str(body), body
    untied = tiny_job(model={"width": 64}, target_config={**FLA, "tie_word_embeddings": False}, readout="untied-zero")
    assert client.post("/v1/jobs", json=untied, headers=auth).status_code == 202
