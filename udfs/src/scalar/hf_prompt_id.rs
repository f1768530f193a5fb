//! `hf_prompt_id(prompt)`: the sha256 hex digest of a prompt, the Hugging Face convention for
//! a `prompt_id` column.
//!
//! ```text
//! SELECT hf_prompt_id('abc');
//! -- ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
//! ```

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::arguments;
use crate::documentation::PROMPTS;
use crate::selection::prompt_id_of;

/// The `hf_prompt_id` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HfPromptId {
    signature: Signature,
}

impl Default for HfPromptId {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HfPromptId {
    fn name(&self) -> &str {
        "hf_prompt_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [t] => Ok(vec![arguments::coerce_string("hf_prompt_id", "prompt", t)?]),
            _ => plan_err!("hf_prompt_id takes 1 argument, got {}", arg_types.len()),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let ColumnarValue::Scalar(s) = &args.args[0] {
            let id = s.try_as_str().flatten().map(prompt_id_of);
            return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(id)));
        }
        let prompts = args.args[0].to_array(args.number_rows)?;
        let mut out = StringBuilder::with_capacity(prompts.len(), prompts.len() * 64);
        for i in 0..prompts.len() {
            out.append_option(arguments::string_at(&prompts, i).map(prompt_id_of));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                PROMPTS,
                "The SHA-256 hex digest of a prompt's text (UTF-8 bytes), the Hugging Face \
                 convention for a `prompt_id` column; null for a null prompt.",
                "hf_prompt_id(prompt)",
            )
            .with_argument("prompt", "String text of the prompt.")
            .with_sql_example(
                r#"```sql
> SELECT hf_prompt_id('abc') AS prompt_id;
+------------------------------------------------------------------+
| prompt_id                                                        |
+------------------------------------------------------------------+
| ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad |
+------------------------------------------------------------------+
```"#,
            )
            .build()
        });
        Some(&DOCUMENTATION)
    }
}
