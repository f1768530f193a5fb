//! Chat messages in Arrow: recognising a message-list column, reading one row of it as
//! [`Message`]s, and building a message-list column in the type prefsmith writes.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field};

use crate::error::{Error, Result};
use crate::reader::string_at;

/// Whether `t` is a message list: `list<struct<…, content, role, …>>`.
pub fn is_message_list(t: &DataType) -> bool {
    match t {
        DataType::List(item) | DataType::LargeList(item) => match item.data_type() {
            DataType::Struct(fields) => {
                fields.find("content").is_some() && fields.find("role").is_some()
            }
            _ => false,
        },
        _ => false,
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// The messages of row `row` of a message-list column (`None` for a null list). A null role or
/// content is an error naming the column and row.
pub fn messages_at(column: &ArrayRef, name: &str, row: usize) -> Result<Option<Vec<Message>>> {
    use datafusion::arrow::array::AsArray;
    if column.is_null(row) {
        return Ok(None);
    }
    let list = match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().value(row),
        DataType::LargeList(_) => column.as_list::<i64>().value(row),
        other => {
            return Err(Error::InvalidData {
                context: format!("column '{name}'"),
                message: format!("expected a list of {{content, role}} messages, got {other}"),
            });
        }
    };
    let items = list.as_struct();
    let (Some(content), Some(role)) = (
        items.column_by_name("content"),
        items.column_by_name("role"),
    ) else {
        return Err(Error::InvalidData {
            context: format!("column '{name}'"),
            message: "a message list needs struct fields 'content' and 'role'".into(),
        });
    };
    (0..items.len())
        .map(|i| match (string_at(role, i), string_at(content, i)) {
            (Some(role), Some(content)) => Ok(Message::new(role, content)),
            _ => Err(Error::InvalidData {
                context: format!("column '{name}'"),
                message: format!("row {row} of its batch: message {i} has a null role or content"),
            }),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The Arrow type of message lists written by prefsmith: the Hugging Face one,
/// `list<struct<content: string, role: string>>`.
pub fn message_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(message_fields()),
        true,
    )))
}

fn message_fields() -> datafusion::arrow::datatypes::Fields {
    vec![
        Field::new("content", DataType::Utf8, true),
        Field::new("role", DataType::Utf8, true),
    ]
    .into()
}

/// A message-list column from rows of messages (`None` = null list).
pub fn message_list_array(rows: &[Option<Vec<Message>>]) -> ArrayRef {
    use datafusion::arrow::array::{ListBuilder, StringBuilder, StructBuilder};
    let fields = message_fields();
    let item = StructBuilder::from_fields(fields.clone(), rows.len());
    let mut lists = ListBuilder::new(item).with_field(Arc::new(Field::new_list_field(
        DataType::Struct(fields),
        true,
    )));
    for row in rows {
        match row {
            None => lists.append_null(),
            Some(messages) => {
                let items = lists.values();
                for m in messages {
                    items
                        .field_builder::<StringBuilder>(0)
                        .expect("content")
                        .append_value(&m.content);
                    items
                        .field_builder::<StringBuilder>(1)
                        .expect("role")
                        .append_value(&m.role);
                    items.append(true);
                }
                lists.append(true);
            }
        }
    }
    Arc::new(lists.finish())
}

/// The content of the last `assistant` message (the response of a conversation).
pub fn last_assistant(messages: &[Message]) -> Option<&str> {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "assistant")
        .map(|m| m.content.as_str())
}
