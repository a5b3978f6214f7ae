"""The checks on "auto" tool calls: grounding of arguments in the conversation, and text that
names a tool (llamapy.agent.call_check). The model-level behaviour is in test_tool_calls."""
from __future__ import annotations

import json

from llamapy.agent.call_check import CallReview, conversation_words, grounded, means_call
from llamapy.agent.messages import ParsedMessage, ToolCall

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"}}}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {
        "filters": {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}}}}}


def call(name: str, **args) -> ToolCall:
    return ToolCall(name, json.dumps(args))


def words(*user: str, tool: str = "", system: str = "") -> set[str]:
    msgs = [{"role": "system", "content": system}] + [{"role": "user", "content": u} for u in user]
    if tool:
        msgs += [{"role": "assistant", "content": "ignored words"}, {"role": "tool", "content": tool}]
    return conversation_words(msgs)


def test_a_city_from_the_question_grounds_the_call():
    w = words("Is it raining in London?")
    assert grounded(call("get_weather", city="London"), WEATHER, w)
    assert grounded(call("get_weather", city="london, UK"), WEATHER, w)  # case and extra words
    assert not grounded(call("get_weather", city="Paris"), WEATHER, w)


def test_spelling_variants_count_short_words_must_match():
    assert grounded(call("get_weather", city="Lisboa"), WEATHER, words("Give me the weather for Lisbon."))
    assert not grounded(call("get_weather", city="Rome"), WEATHER, words("What is the capital of Italy?"))
    assert not grounded(call("get_weather", city="Oslo"), WEATHER, words("Also"))  # 4 letters, one apart: no


def test_enum_choices_and_numbers_prove_nothing():
    w = words("hi")
    assert not grounded(call("get_weather", city="Paris", unit="celsius"), WEATHER, w)
    assert grounded(call("get_weather", unit="celsius", days=3), WEATHER, w)  # no free text: nothing to check
    assert not grounded(call("get_weather", city="Paris", unit="celsius"), WEATHER, words("celsius please"))


def test_nested_arguments_and_tool_results_ground_too():
    assert grounded(call("search", filters={"tags": ["jazz", "vinyl"]}), SEARCH, words("any vinyl shops?"))
    assert grounded(call("get_weather", city="Tokyo"), WEATHER, words("weather where she lives?", tool="Tokyo"))
    assert not grounded(call("get_weather", city="Paris"), WEATHER, words("hi", system="e.g. Paris"))


def test_arguments_that_are_not_json_are_not_grounded():
    assert not grounded(ToolCall("get_weather", "{city: Paris"), WEATHER, words("Paris"))


def test_text_that_names_a_tool_means_a_call():
    assert means_call("You can use the `get_weather` function for this", ["get_weather"])
    assert means_call('<json>{name: "get_weather", arguments: {"city": "Berlin"}}</json>', ["get_weather"])
    assert not means_call("The weather is nice", ["get_weather"])
    assert not means_call("use my_get_weather_v2", ["get_weather"])  # a different name


def test_only_a_reply_to_the_user_is_completed_with_a_call():
    reply = ParsedMessage("get_weather says it is sunny in Paris.")
    asked = [{"role": "user", "content": "Weather in Paris?"}]
    assert CallReview(asked, [WEATHER]).wants_call(reply)
    answered = asked + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"}]
    review = CallReview(answered, [WEATHER])
    assert not review.wants_call(reply)
    assert review.keep([call("get_weather", city="Paris"), call("get_weather", city="Rome")]) == \
        [call("get_weather", city="Paris")]
