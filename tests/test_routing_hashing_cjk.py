"""The learned policy's ``hashing`` featurizer reads Chinese, Japanese and Thai by their letters, and a policy saved
before featurizer versions still reads its queries as it was fitted to.

It split a text into ``\\w+`` words, and a script written without spaces has none between its words: a whole Chinese
or Japanese sentence was one "word", so no held-out question shared a feature with a training one and the policy
learned nothing from them. Version 2 reads a run of such a script as its letters (router.unspaced_letter), and the
word pairs it already hashed are then the run's letter bigrams; it also keeps a letter's combining marks in its word
(version 1 split a Hindi word at each vowel sign). A policy file records its featurizer's version; a file written before
versions were is read as version 1, with version 1's features.

tests/data/route_policy_hashing_v1.npz and .json were made by the code before this change (commit ae44add5,
LearnedPolicy.save and .probabilities, featurizer "hashing"), trained on TRAIN below and six English rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from costline.serving.errors import PolicyFileError, RoutingError
from costline.serving.routing.learned import (
    HashingFeaturizer,
    LabelledQuery,
    LearnedPolicy,
    make_featurizer,
    train_policy,
)

DATA = Path(__file__).parent / "data"

# Our own questions, labelled by hand: asking for code or an analysis -> mid; a greeting, thanks or a yes/no
# question -> budget. Some short mid ones and long budget ones, so that length alone does not tell them apart.
TRAIN = [
    ("请帮我写一个Python函数，把列表按长度排序。", "mid"),
    ("这段代码为什么报错？请分析一下原因。", "mid"),
    ("请解释这个SQL查询的执行计划。", "mid"),
    ("帮我分析一下这份销售数据的趋势。", "mid"),
    ("用JavaScript写一个函数来检查邮箱格式。", "mid"),
    ("这个算法的时间复杂度是多少？请详细分析。", "mid"),
    ("写个排序函数。", "mid"),
    ("分析这段代码。", "mid"),
    ("このPythonコードのバグを見つけて修正してください。", "mid"),
    ("リストを並べ替える関数を書いてください。", "mid"),
    ("このエラーメッセージの原因を分析してください。", "mid"),
    ("売上データの傾向を分析して説明してください。", "mid"),
    ("SQLのクエリを最適化する方法を説明してください。", "mid"),
    ("再帰関数の仕組みをコードで説明してください。", "mid"),
    ("関数を書いて。", "mid"),
    ("コードを説明して。", "mid"),
    ("你好！", "budget"),
    ("谢谢你的帮助。", "budget"),
    ("早上好，今天过得怎么样？", "budget"),
    ("明天会下雨吗？", "budget"),
    ("好的，没问题。", "budget"),
    ("你是机器人吗？", "budget"),
    ("你好，很高兴认识你，祝你今天过得愉快，周末也开心！", "budget"),
    ("こんにちは！", "budget"),
    ("ありがとうございます。", "budget"),
    ("おはようございます、元気ですか？", "budget"),
    ("明日は晴れますか？", "budget"),
    ("はい、わかりました。", "budget"),
    ("あなたはロボットですか？", "budget"),
    ("こんにちは、お久しぶりです。お元気でしたか？週末は楽しかったですか？", "budget"),
]
# Held out, none of them a training sentence; the short ones ask for code, the long ones greet.
HELD_OUT = [
    ("写一个函数。", "mid"),                                 # "write a function"
    ("请分析这个错误。", "mid"),                             # "please analyse this error"
    ("コードを書いてください。", "mid"),                      # "please write the code"
    ("このバグを説明して。", "mid"),                          # "explain this bug"
    ("你好，谢谢你，今天过得很好，明天见！", "budget"),          # "hi, thanks, today went well, see you tomorrow"
    ("早上好！你今天好吗？", "budget"),                        # "good morning! are you well today?"
    ("こんにちは、ありがとうございます、元気です！", "budget"),   # "hello, thank you, I am fine"
    ("おはようございます！明日は晴れですか？", "budget"),        # "good morning! will it be sunny tomorrow?"
]


@pytest.mark.parametrize(("text", "v2", "v1"), [
    ("请解释一下", ["请", "解", "释", "一", "下"], ["请解释一下"]),
    ("この関数を説明して", ["こ", "の", "関", "数", "を", "説", "明", "し", "て"], ["この関数を説明して"]),
    ("Python 3の関数", ["python", "3", "の", "関", "数"], ["python", "3の関数"]),  # a digit is no unspaced letter
    ("ที่นี่ไหม", ["ที่", "นี่", "ไ", "ห", "ม"], ["ทนไหม"]),   # Thai: a letter keeps its vowel and tone marks
    # Hindi is spaced: words as before, but whole (version 1 read the text without its Mn signs, and \w stops at an
    # Mc one: क्या was "कया", split at ा; मेरी "मरी", split at ी; करेंगे "करग")
    ("क्या आप मेरी मदद करेंगे?", ["क्या", "आप", "मेरी", "मदद", "करेंगे"], ["कय", "आप", "मर", "मदद", "करग"]),
    ("How do I reset my password?", ["how", "do", "i", "reset", "my", "password"],
     ["how", "do", "i", "reset", "my", "password"]),
], ids=["chinese", "japanese", "latin-and-kana", "thai", "hindi", "english"])
def test_the_words_each_version_reads(text: str, v2: list[str], v1: list[str]) -> None:
    assert HashingFeaturizer().words(text) == v2
    assert HashingFeaturizer(version=1).words(text) == v1


def test_english_reads_alike_in_both_versions() -> None:
    texts = ["How do I reset my password?", "Write a Python function that parses ISO dates.", ""]
    assert np.array_equal(HashingFeaturizer().encode(texts), HashingFeaturizer(version=1).encode(texts))


def _train(version: int | None = None) -> LearnedPolicy:
    """A policy fitted on TRAIN with the hashing featurizer (None: as `costline route train` makes it, the current
    version)."""
    pytest.importorskip("sklearn")
    rows = [LabelledQuery(q, "chat", tier) for q, tier in TRAIN]
    featurizer = None if version is None else HashingFeaturizer(version=version)
    return train_policy(rows, featurizer_name="hashing", featurizer=featurizer, min_adequacy=0.5)


def test_a_policy_learns_chinese_and_japanese_questions() -> None:
    policy = _train()
    p_budget = policy.probabilities([q for q, _ in HELD_OUT], ["chat"] * len(HELD_OUT))[:, 0]
    assert policy.classes == ("budget", "mid")
    for (query, tier), p in zip(HELD_OUT, p_budget):
        assert (p > 0.65 if tier == "budget" else p < 0.35), (query, tier, float(p))
        assert policy.route(query, "chat").tier == tier, query
    assert policy.featurizer_version == 2
    # Version 1 read each held-out sentence as one word no training row has: what it got right, it got by the
    # length and by chance (its P(budget) stay near one half), and it does not get all of them right.
    old = _train(1)
    assert [old.route(q, "chat").tier for q, _ in HELD_OUT] != [tier for _, tier in HELD_OUT]


def test_a_policy_saved_before_versions_loads_and_predicts_as_before(tmp_path: Path) -> None:
    golden = json.loads((DATA / "route_policy_hashing_v1.json").read_text(encoding="utf-8"))
    path = DATA / "route_policy_hashing_v1.npz"
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta == {"format": "costline-route-policy/1", "classes": ["budget", "mid"], "task_types": ["chat"],
                    "featurizer": "hashing"}  # as the old code wrote it: no version
    policy = LearnedPolicy.load(path, min_adequacy=0.5)
    assert policy.featurizer_version == 1
    probs = policy.probabilities(golden["queries"], ["chat"] * len(golden["queries"]))
    assert np.allclose(probs, golden["probabilities"], atol=1e-9, rtol=0)
    # saved again it stays version 1, in the format the old code reads
    again = LearnedPolicy.load(policy.save(tmp_path / "again.npz"), min_adequacy=0.5)
    assert again.featurizer_version == 1
    with np.load(tmp_path / "again.npz") as data:
        assert json.loads(str(data["meta"]))["format"] == "costline-route-policy/1"
    assert np.allclose(again.probabilities(golden["queries"], ["chat"] * len(golden["queries"])), probs)


def test_a_policy_saved_before_versions_measures_hindi_and_thai_as_it_was_fitted() -> None:
    """Its length feature too: fitted when the visible text dropped Hindi's and Thai's vowel signs, it reads them
    without (the same old code's probabilities; read with the marks, each moved by ~0.01 towards the dearer tier)."""
    golden = json.loads((DATA / "route_policy_hashing_v1.json").read_text(encoding="utf-8"))["marks"]
    policy = LearnedPolicy.load(DATA / "route_policy_hashing_v1.npz", min_adequacy=0.5)
    probs = policy.probabilities(golden["queries"], ["chat"] * len(golden["queries"]))
    assert np.allclose(probs, golden["probabilities"], atol=1e-9, rtol=0)


@pytest.mark.parametrize(("query", "v1", "v2"), [
    # न म स ् त े , ␠ आ प ␠ क ै स े ␠ ह ै ं ? : 20 code points, 6 of them marks (् े ै े ै ं), which version 1 left out
    ("नमस्ते, आप कैसे हैं?", 14, 20),
    # ส ว ั ส ด ี ค ร ั บ : 10, of them 3 marks (ั ี ั)
    ("สวัสดีครับ", 7, 10),
    ("What is the capital of France?", 30, 30),
])
def test_the_length_feature_of_each_version(query: str, v1: int, v2: int) -> None:
    from costline.serving.routing.learned import _length

    assert (_length(query, 1), _length(query, 2)) == (v1, v2)


def test_a_minilm_policy_records_the_length_version(tmp_path: Path) -> None:
    """A MiniLM policy's features are its embedding and the length: version 2 measures the length with a letter's
    marks, version 1 (a file from before versions) without; the file says which (format 2 for version 2)."""
    coef, intercept = np.zeros((1, 384 + 1 + 1)), np.zeros(1)
    new = LearnedPolicy(coef=coef, intercept=intercept, classes=["budget", "mid"], task_types=["chat"],
                        featurizer_name="minilm")
    with np.load(new.save(tmp_path / "m.npz")) as data:
        meta = json.loads(str(data["meta"]))
    assert (meta["format"], meta["featurizer_version"]) == ("costline-route-policy/2", 2)
    np.savez(tmp_path / "old.npz", coef=coef, intercept=intercept, meta=np.array(json.dumps(
        {"format": "costline-route-policy/1", "classes": ["budget", "mid"], "task_types": ["chat"],
         "featurizer": "minilm"})))
    assert LearnedPolicy.load(tmp_path / "old.npz").featurizer_version == 1


def test_a_new_policy_records_its_version(tmp_path: Path) -> None:
    policy = _train()
    path = policy.save(tmp_path / "p.npz")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    # format 2: costline from before versions refuses it ("retrain it") rather than read it with version 1's features
    assert (meta["format"], meta["featurizer_version"]) == ("costline-route-policy/2", 2)
    loaded = LearnedPolicy.load(path, min_adequacy=0.5)
    queries = [q for q, _ in HELD_OUT]
    assert loaded.featurizer_version == 2
    assert np.allclose(loaded.probabilities(queries, ["chat"] * len(queries)),
                       policy.probabilities(queries, ["chat"] * len(queries)))


@pytest.mark.parametrize("change", [
    {"featurizer_version": 3},                                              # newer than this costline
    {"featurizer_version": "2", "format": "costline-route-policy/2"},      # not a number
    {"featurizer_version": True},
    {"featurizer_version": 2, "format": "costline-route-policy/1"},        # format 1 is version 1
    {"featurizer_version": 1, "format": "costline-route-policy/2"},
    {"featurizer": "minilm", "featurizer_version": 3, "format": "costline-route-policy/2"},  # minilm has 1 and 2
], ids=["v3", "string", "bool", "v2-format-1", "v1-format-2", "minilm-v3"])
def test_a_version_this_costline_does_not_read_is_refused(tmp_path: Path, change: dict) -> None:
    with np.load(DATA / "route_policy_hashing_v1.npz") as data:
        meta = json.loads(str(data["meta"]))
        coef, intercept = data["coef"], data["intercept"]
    path = tmp_path / "p.npz"
    with path.open("wb") as f:
        np.savez(f, coef=coef, intercept=intercept, meta=np.array(json.dumps({**meta, **change})))
    with pytest.raises(PolicyFileError, match=r"version .* retrain it with `costline route train`"):
        LearnedPolicy.load(path)


@pytest.mark.parametrize(("saved", "handed"), [(1, 2), (2, 1)], ids=["v1-file-v2-featurizer", "v2-file-v1-featurizer"])
def test_a_featurizer_of_another_version_is_refused(tmp_path: Path, saved: int, handed: int) -> None:
    """Read with another version's words (a Hindi word cut at its vowel signs, or not), a policy would route by
    features it was not fitted on, and say nothing."""
    path = DATA / "route_policy_hashing_v1.npz" if saved == 1 else _train().save(tmp_path / "v2.npz")
    with pytest.raises(RoutingError, match=rf"computes version {handed} of its features, but the policy was fitted "
                                           rf"on version {saved}: pass make_featurizer\('hashing', version={saved}\)"):
        LearnedPolicy.load(path, featurizer=HashingFeaturizer(version=handed))


@pytest.mark.parametrize("featurizer", [HashingFeaturizer(version=1), make_featurizer("hashing", version=1), None],
                         ids=["HashingFeaturizer", "make_featurizer", "none"])
def test_a_featurizer_of_the_files_version_is_used(featurizer: HashingFeaturizer | None) -> None:
    golden = json.loads((DATA / "route_policy_hashing_v1.json").read_text(encoding="utf-8"))["marks"]
    policy = LearnedPolicy.load(DATA / "route_policy_hashing_v1.npz", min_adequacy=0.5, featurizer=featurizer)
    assert policy.featurizer.version == 1
    probs = policy.probabilities(golden["queries"], ["chat"] * len(golden["queries"]))
    assert np.allclose(probs, golden["probabilities"], atol=1e-9, rtol=0)
