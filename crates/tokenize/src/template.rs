//! A model's own chat template: the Jinja `chat_template` of its tokenizer folder, rendered as
//! transformers' `apply_chat_template(tokenize=False)` renders it.
//!
//! transformers renders with Jinja2 in a sandbox with `trim_blocks` and `lstrip_blocks`, the
//! loop-controls extension, a `tojson` filter that leaves non-ASCII characters as they are, and
//! `raise_exception`; it passes `messages` (with every key whose value is `None` dropped first),
//! the special tokens (`bos_token`, `eos_token`, ...) and `add_generation_prompt`. [`ChatTemplate`]
//! does the same with minijinja, with Python's string and dict methods (`split`, `strip`,
//! `items`, ...) from minijinja-contrib's `pycompat`. Tested byte for byte against transformers on
//! DeepSeek-V2-Chat's and DeepSeek-V3/R1's templates ([`testdata/tokenize/chat/`], from
//! [`scripts/tokenizer/chat_templates.py`]).
//!
//! [`testdata/tokenize/chat/`]: https://github.com/deepblocks/deepblocks/tree/main/testdata/tokenize/chat
//! [`scripts/tokenizer/chat_templates.py`]: https://github.com/deepblocks/deepblocks/blob/main/scripts/tokenizer/chat_templates.py

use minijinja::{Environment, ErrorKind, Value as JinjaValue};
use serde_json::Value;

use crate::chat::{Message, Role};
use crate::{Error, Result};

/// The roles a message may have.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// The name the template is compiled under (it appears in minijinja's messages).
const NAME: &str = "chat_template";

/// A compiled chat template.
///
/// ```
/// use deepblocks_tokenize::ChatTemplate;
/// let t = ChatTemplate::new(
///     "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}{% endfor %}\
///      {% if add_generation_prompt %}<assistant>{% endif %}",
/// )?;
/// let messages = serde_json::json!([{"role": "user", "content": " Hi "}]);
/// assert_eq!(t.render(&messages, "<s>", "</s>", true)?, "<s><user>Hi<assistant>");
/// # Ok::<(), deepblocks_tokenize::Error>(())
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] with minijinja's message and the line, when it does not parse.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(NAME, source.into())
            .map_err(template_error)?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` (a JSON list of `{"role", "content", ...}` objects, as transformers
    /// takes them: `tool_calls` and any other keys pass through) with the special tokens and
    /// `add_generation_prompt`.
    ///
    /// # Errors
    /// [`Error::ChatMessages`] when `messages` is not a list of objects each with a known
    /// `role` ([`ROLES`]); [`Error::ChatTemplate`] when the template fails (minijinja's message
    /// and the line, or the template's own `raise_exception` message).
    pub fn render(
        &self,
        messages: &Value,
        bos_token: &str,
        eos_token: &str,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let messages = clean_messages(messages)?;
        let template = self.env.get_template(NAME).map_err(template_error)?;
        let ctx = minijinja::context! {
            messages => JinjaValue::from_serialize(&messages),
            bos_token => bos_token,
            eos_token => eos_token,
            add_generation_prompt => add_generation_prompt,
        };
        template.render(ctx).map_err(template_error)
    }

    /// [`Self::render`] for typed messages.
    ///
    /// # Errors
    /// As [`Self::render`].
    pub fn render_messages(
        &self,
        messages: &[Message],
        bos_token: &str,
        eos_token: &str,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render(
            &messages_json(messages),
            bos_token,
            eos_token,
            add_generation_prompt,
        )
    }
}

/// Typed messages as the JSON list a template sees.
pub fn messages_json(messages: &[Message]) -> Value {
    Value::Array(
        messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                serde_json::json!({"role": role, "content": m.content})
            })
            .collect(),
    )
}

/// The messages checked (a list of objects with a known role), with every `null`-valued key
/// dropped, as transformers does before rendering.
fn clean_messages(messages: &Value) -> Result<Value> {
    let bad = |index: Option<usize>, reason: String| Error::ChatMessages { index, reason };
    let list = messages.as_array().ok_or_else(|| {
        bad(
            None,
            format!("the messages are {}, not a list", kind(messages)),
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| bad(Some(i), format!("is {}, not an object", kind(m))))?;
        match obj.get("role") {
            Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
            Some(Value::String(r)) => {
                return Err(bad(
                    Some(i),
                    format!("has role {r:?}; known roles: {}", ROLES.join(", ")),
                ));
            }
            _ => return Err(bad(Some(i), "has no string \"role\"".into())),
        }
        let kept: serde_json::Map<String, Value> = obj
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.push(Value::Object(kept));
    }
    Ok(Value::Array(out))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn template_error(e: minijinja::Error) -> Error {
    let mut message = e.to_string();
    // minijinja keeps the underlying cause (e.g. a method's own error) apart.
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate {
        message,
        line: e.line(),
    }
}

/// transformers' `raise_exception(message)`: the template refuses its input.
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("the template raised: {message}"),
    ))
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False)` — `", "` and `": "`
/// between items, non-ASCII characters kept — with an optional `indent`.
fn tojson(
    value: JinjaValue,
    kwargs: minijinja::value::Kwargs,
) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&mut out, &json, indent, 0);
    Ok(out)
}

/// Writes `v` as Python's `json.dumps` would (`ensure_ascii=False`).
fn python_json(out: &mut String, v: &Value, indent: Option<usize>, depth: usize) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                python_json(out, item, indent, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                python_json(out, item, indent, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}").unwrap();
        let ctx = minijinja::context! { x => serde_json::json!({"a": [1, "é"], "b": {}}) };
        let env = &t.env;
        let got = env.get_template(NAME).unwrap().render(ctx).unwrap();
        assert_eq!(
            got,
            "{\"a\": [1, \"é\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    \"é\"\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn bad_templates_and_messages_are_errors_naming_the_culprit() {
        let err = ChatTemplate::new("line one\n{% if %}").unwrap_err();
        assert!(
            matches!(err, Error::ChatTemplate { line: Some(2), .. }),
            "{err}"
        );
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        let err = t.render(&serde_json::json!([]), "", "", false).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
        let t = ChatTemplate::new("{{ messages[0].content }}").unwrap();
        for (messages, says) in [
            (serde_json::json!({"role": "user"}), "not a list"),
            (serde_json::json!(["hi"]), "message 0 is a string"),
            (
                serde_json::json!([{"role": "robot", "content": "x"}]),
                "role \"robot\"",
            ),
            (serde_json::json!([{"content": "x"}]), "no string \"role\""),
        ] {
            let err = t.render(&messages, "", "", false).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
