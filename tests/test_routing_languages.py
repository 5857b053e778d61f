"""The rules policy routes a question by what it asks, not by the script it is written in.

The length rule ("a query under short_query_chars (200) goes to budget") counted characters one for one, and the same
question is two to three and a half times shorter in Japanese or Chinese than in English: every CJK question was
"short" and went to the budget tier, a GDPR liability question or a database failover plan included. A Han character
now counts as 3.5 characters of English, a kana 1.5, a Hangul syllable 2 (``WIDE_CHAR_WEIGHT``). Keywords in those scripts could never match either:
the whole-word boundary wants a non-word character after "説明", and "説明して" has none.
"""

from __future__ import annotations

import pytest

from costline.serving.routing.router import RulePolicy, request_chars
from costline.serving.settings import RouteRulesConfig

# our own parallel questions (English / Japanese / Chinese), lengths counted by hand below
DISPUTE_EN = ("I was billed twice for the annual plan in March, once on the 3rd and again on the 17th after I "
              "upgraded seats; support refunded one charge but the invoice still shows both and my accountant "
              "needs a corrected invoice before the quarter closes. What should I do?")
DISPUTE_JA = ("3月に年間プランの料金が2回請求されました。3日と、席数を増やした後の17日です。サポートから1回分は返金されま"
              "したが、請求書にはまだ両方が記載されており、四半期の締めまでに会計士が訂正済みの請求書を必要としています。"
              "どうすればよいですか？")
DISPUTE_ZH = "三月份年度套餐被扣了两次费，三号一次，十七号增加席位后又一次；客服退了一笔，但发票上仍显示两笔，季度结账前会计需要更正后的发票。我该怎么办？"
EASY_JA = "パスワードをリセットするにはどうすればいいですか？"
EASY_ZH = "我怎么重置密码？"


def test_the_questions_are_what_the_test_says() -> None:
    # long in English (>= 200), and far under 200 characters when counted one for one in Japanese and Chinese
    assert len(DISPUTE_EN) >= 200
    assert 100 < len(DISPUTE_JA) < 200 and 50 < len(DISPUTE_ZH) < 100
    assert len(EASY_JA) == 25 and len(EASY_ZH) == 8


@pytest.mark.parametrize("question, tier", [
    (DISPUTE_EN, "frontier"),  # the rules' default tier for a long question without a keyword
    (DISPUTE_JA, "frontier"),  # before: budget, "query under 200 characters"
    (DISPUTE_ZH, "frontier"),  # before: budget
    (EASY_JA, "budget"),       # 25 characters, 24 of them kana, 1 mark: 24 * 1.5 + 1 = 37 < 200
    (EASY_ZH, "budget"),       # 8 characters, 7 of them Han, 1 mark: 7 * 3.5 + 1 = 25.5 < 200
])
def test_the_length_rule_reads_a_question_of_any_script_alike(question, tier) -> None:
    assert RulePolicy(RouteRulesConfig()).route(question, "chat").tier == tier


def test_a_request_of_cjk_turns_is_as_long_as_its_text() -> None:
    # two turns of 60 Han characters each, then one of one: 60 * 3.5 = 210 a turn, 3.5 rounded to 4 for the last
    turn = "请" * 60
    assert request_chars([{"role": "user", "content": turn}, {"role": "assistant", "content": turn},
                          {"role": "user", "content": [{"type": "text", "text": "好"}]}]) == 210 + 210 + 4


def test_emoji_padding_does_not_make_a_question_long() -> None:
    assert RulePolicy(RouteRulesConfig()).route("Reset my password? " + "🙂" * 150, "chat").tier == "budget"


@pytest.mark.parametrize("keyword, question", [  # long enough for the length rule to pass them on
    ("説明", DISPUTE_JA + "請求書の日割り計算について説明してください。"),
    ("解释", DISPUTE_ZH + "请解释一下发票上的按比例费用。"),
    ("explain", DISPUTE_EN + " Please explain the proration on my invoice."),
])
def test_a_keyword_of_an_unspaced_script_matches_inside_its_sentence(keyword, question) -> None:
    decision = RulePolicy(RouteRulesConfig(mid_keywords=(keyword,))).route(question, "chat")
    assert (decision.tier, decision.reason) == ("mid", f"keyword {keyword!r}")


def test_a_latin_keyword_still_needs_a_whole_word() -> None:
    assert RulePolicy(RouteRulesConfig(mid_keywords=("explain",))).route(
        "Why is this charge unexplained?", "chat").reason != "keyword 'explain'"


# our own "explain" question (long enough for the length rule to pass it on) in eight languages: mid in each, as in
# English (before: only English reached mid; the others went to the default tier, frontier, the dearest)
EXPLAIN = {
    "en": "Please explain how the prorated charge on my March invoice was calculated after I added three seats to the "
          "team plan in the middle of the billing cycle, and why it differs from what the pricing page shows.",
    "es": "Por favor, explica cómo se calculó el cargo prorrateado de mi factura de marzo después de añadir tres puestos "
          "al plan de equipo a mitad del ciclo de facturación, y por qué difiere de la página de precios.",
    "pt": "Por favor, explique como foi calculada a cobrança proporcional da minha fatura de março depois que adicionei "
          "três lugares ao plano de equipe no meio do ciclo de cobrança, e por que difere da página de preços.",
    "fr": "Pouvez-vous m'expliquer… non : expliquez comment le montant au prorata de ma facture de mars a été calculé "
          "après l'ajout de trois postes au forfait équipe en milieu de cycle, et pourquoi il diffère des tarifs.",
    "de": "Bitte erklären Sie, wie die anteilige Gebühr auf meiner Märzrechnung berechnet wurde, nachdem ich mitten im "
          "Abrechnungszeitraum drei Plätze zum Team-Tarif hinzugefügt habe, und warum sie von der Preisseite abweicht.",
    "it": "Per favore, spiega come è stato calcolato l'addebito proporzionale sulla mia fattura di marzo dopo che ho "
          "aggiunto tre postazioni al piano team a metà del ciclo di fatturazione, e perché differisce dal listino.",
    "ja": "請求期間の途中でチームプランに3席追加した後、3月の請求書の日割り料金がどのように計算されたのか、"
          "また料金ページと異なる理由を説明してください。追加した席の開始日と請求書の日付も確認したいです。",
    "zh": "我在计费周期中途给团队套餐增加了三个席位，请解释三月发票上的按比例费用是如何计算的，以及为什么与价格页面不同。"
          "我还想确认新增席位的开始日期。",
}


@pytest.mark.parametrize("lang", sorted(EXPLAIN))
def test_an_explain_question_goes_to_mid_in_any_of_the_default_languages(lang) -> None:
    decision = RulePolicy(RouteRulesConfig()).route(EXPLAIN[lang], "chat")
    assert decision.tier == "mid" and decision.reason.startswith("keyword "), (lang, decision)


@pytest.mark.parametrize("question", [
    "How do I explicate a poem's meter, line by line, for my literature class assignment that is due next week? " * 2,
    "Our Italian supplier's spiegazione of the invoice was unclear; what should the accounts team do next about it? " * 2,
])
def test_a_word_that_only_starts_like_a_keyword_is_no_keyword(question) -> None:
    assert not RulePolicy(RouteRulesConfig()).route(question, "chat").reason.startswith("keyword ")
