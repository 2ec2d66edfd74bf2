//! The DeepSeek-V2-Chat prompt format.

/// The DeepSeek-V2 beginning-of-sentence token.
pub const DEEPSEEK_BOS: &str = "<｜begin▁of▁sentence｜>";
/// The DeepSeek-V2 end-of-sentence token; it closes every assistant turn.
pub const DEEPSEEK_EOS: &str = "<｜end▁of▁sentence｜>";

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions placed before the conversation.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Renders a conversation in the DeepSeek-V2-Chat format, exactly as the `chat_template` of
/// `deepseek-ai/DeepSeek-V2-Chat`'s `tokenizer_config.json` does:
///
/// ```text
/// {bos}                                  once, at the start
/// {content}\n\n                          a system message
/// User: {content}\n\n                    a user message
/// Assistant: {content}{eos}              an assistant message
/// Assistant:                             the generation prompt, if asked for
/// ```
///
/// So a single turn is `<｜begin▁of▁sentence｜>User: {msg}\n\nAssistant:`, and with an optional
/// system message first, `<｜begin▁of▁sentence｜>{system}\n\nUser: ...` (the model card's two
/// examples). The model writes its reply after `Assistant:` (starting with a space) and ends it
/// with eos.
///
/// ```
/// use deepblocks_tokenize::{deepseek_v2_chat, Message, DEEPSEEK_BOS, DEEPSEEK_EOS};
/// let p = deepseek_v2_chat(&[Message::user("Hi")], DEEPSEEK_BOS, DEEPSEEK_EOS, true);
/// assert_eq!(p, "<｜begin▁of▁sentence｜>User: Hi\n\nAssistant:");
/// let p = deepseek_v2_chat(
///     &[Message::user("Hi"), Message::assistant("Hello!"), Message::user("Bye")],
///     DEEPSEEK_BOS, DEEPSEEK_EOS, true,
/// );
/// assert_eq!(
///     p,
///     "<｜begin▁of▁sentence｜>User: Hi\n\nAssistant: Hello!<｜end▁of▁sentence｜>User: Bye\n\nAssistant:"
/// );
/// ```
pub fn deepseek_v2_chat(
    messages: &[Message],
    bos: &str,
    eos: &str,
    add_generation_prompt: bool,
) -> String {
    let mut out = String::from(bos);
    for m in messages {
        match m.role {
            Role::User => {
                out.push_str("User: ");
                out.push_str(&m.content);
                out.push_str("\n\n");
            }
            Role::Assistant => {
                out.push_str("Assistant: ");
                out.push_str(&m.content);
                out.push_str(eos);
            }
            Role::System => {
                out.push_str(&m.content);
                out.push_str("\n\n");
            }
        }
    }
    if add_generation_prompt {
        out.push_str("Assistant:");
    }
    out
}
