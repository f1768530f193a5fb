//! An ordered reader of Parquet files as a DataFusion table: files in the given order, rows in
//! file order, one partition. Used where row order carries meaning — the long layout without a
//! `response_index` column (`docs/ALGORITHMS.md` §2.3: the index is the row's position among its prompt's
//! rows, assigned while reading, before any parallel step) and the streaming aggregation over
//! input sorted by prompt id.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::SortExpr;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::col;
use futures::{StreamExt, TryStreamExt};
pub use prefsmith_udfs::string_at;

use crate::error::Result;
use crate::storage::{Location, ParquetSource};

/// Name of the column the reader adds when asked to number rows within each prompt.
pub const ROW_INDEX_COLUMN: &str = "__response_index";

/// Reads `files` in order, keeping only `columns`, optionally numbering each row within its
/// prompt (`number_by` = the prompt id column).
#[derive(Debug)]
pub struct OrderedParquet {
    files: Vec<Location>,
    columns: Vec<String>,
    number_by: Option<String>,
    schema: SchemaRef,
}

impl OrderedParquet {
    /// A reader over `files` whose (validated) schema is `file_schema`.
    pub fn new(
        files: Vec<Location>,
        file_schema: &Schema,
        columns: Vec<String>,
        number_by: Option<String>,
    ) -> Result<Self> {
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| {
                file_schema
                    .field_with_name(c)
                    .map(|f| as_view(f.clone()).with_nullable(true))
            })
            .collect::<std::result::Result<_, _>>()?;
        if number_by.is_some() {
            fields.push(Field::new(ROW_INDEX_COLUMN, DataType::Int64, false));
        }
        Ok(Self {
            files,
            columns,
            number_by,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The reader as a table, declared sorted by `sorted_by` when given (the caller must verify
    /// the claim on the output).
    pub fn into_table(self, sorted_by: Option<&str>) -> Result<StreamingTable> {
        let schema = Arc::clone(&self.schema);
        let table = StreamingTable::try_new(schema, vec![Arc::new(self)])?;
        Ok(match sorted_by {
            Some(column) => table.with_sort_order(vec![SortExpr::new(col(column), true, false)]),
            None => table,
        })
    }
}

impl PartitionStream for OrderedParquet {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch_size = ctx.session_config().batch_size();
        let columns = self.columns.clone();
        let schema = Arc::clone(&self.schema);
        let files = futures::stream::iter(self.files.clone());
        let batches = files
            .then(move |file| open(file, columns.clone(), batch_size))
            .try_flatten();
        let mut numbering = self
            .number_by
            .as_ref()
            .map(|c| Numbering::new(self.schema.index_of(c).unwrap_or(0)));
        let out_schema = Arc::clone(&schema);
        let stream = batches.map(move |batch| {
            let batch = batch?;
            let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
            if let Some(numbering) = &mut numbering {
                columns.push(numbering.number(&columns[numbering.column])?);
            }
            Ok(RecordBatch::try_new(Arc::clone(&out_schema), columns)?)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// Every row of `files` (all columns of `schema`), in order: for stages that need the whole
/// table, such as a global ranking.
pub async fn read_all_in_order(files: &[Location], schema: &Schema) -> Result<Vec<RecordBatch>> {
    let mut stream = stream_in_order(files, schema)?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    Ok(batches)
}

/// Every row of `files` (all columns of `schema`), in order, as a stream.
pub fn stream_in_order(files: &[Location], schema: &Schema) -> Result<SendableRecordBatchStream> {
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let reader = OrderedParquet::new(files.to_vec(), schema, columns, None)?;
    Ok(reader.execute(crate::session::new_context(1)?.task_ctx()))
}

/// `columns` of every file, several files decoded at once (one task per core), each batch
/// turned into a `T` by `convert(file index, index of the batch's first row in its file,
/// batch)` as soon as it is decoded (so the batches need not be held); the results come back
/// in file order, rows in file order.
pub async fn map_columns_in_order<T, F>(
    files: &[Location],
    columns: &[String],
    convert: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize, u64, RecordBatch) -> Result<T> + Send + Sync + 'static,
{
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
    let convert = Arc::new(convert);
    let tasks = files.iter().cloned().enumerate().map(|(index, file)| {
        let columns = columns.to_vec();
        let convert = Arc::clone(&convert);
        tokio::spawn(async move {
            let mut batches = open(file, columns, 65_536).await?;
            let mut out = Vec::new();
            let mut first_row = 0u64;
            while let Some(batch) = batches.next().await {
                let batch = batch?;
                let rows = batch.num_rows() as u64;
                out.push(convert(index, first_row, batch)?);
                first_row += rows;
            }
            Ok::<_, crate::Error>(out)
        })
    });
    let per_file: Vec<Vec<T>> = futures::stream::iter(tasks)
        .buffered(parallel)
        .map(|joined| {
            joined.map_err(|e| {
                crate::Error::from(DataFusionError::Execution(format!(
                    "a reading task failed: {e}"
                )))
            })?
        })
        .try_collect()
        .await?;
    Ok(per_file.into_iter().flatten().collect())
}

/// Strings are read as `Utf8View`: decoding then points into the pages instead of copying
/// every string into a new buffer.
fn as_view(field: Field) -> Field {
    match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => field.with_data_type(DataType::Utf8View),
        _ => field,
    }
}

async fn open(
    file: Location,
    columns: Vec<String>,
    batch_size: usize,
) -> datafusion::error::Result<impl futures::Stream<Item = datafusion::error::Result<RecordBatch>>>
{
    let named = |e: &dyn std::fmt::Display| DataFusionError::Execution(format!("{file}: {e}"));
    let mut handle = ParquetSource::open(&file)
        .await
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let metadata = ArrowReaderMetadata::load_async(&mut handle, ArrowReaderOptions::new())
        .await
        .map_err(|e| named(&e))?;
    let viewed: Vec<Field> = metadata
        .schema()
        .fields()
        .iter()
        .map(|f| as_view(f.as_ref().clone()))
        .collect();
    let options = ArrowReaderOptions::new().with_schema(Arc::new(Schema::new(viewed)));
    let metadata = ArrowReaderMetadata::try_new(Arc::clone(metadata.metadata()), options)
        .map_err(|e| named(&e))?;
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(handle, metadata);
    let arrow_schema = Arc::clone(builder.schema());
    let roots: Vec<usize> = columns
        .iter()
        .map(|c| arrow_schema.index_of(c).map_err(|e| named(&e)))
        .collect::<datafusion::error::Result<_>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let stream = builder
        .with_projection(mask)
        .with_batch_size(batch_size)
        .build()
        .map_err(|e| named(&e))?;
    // The projection keeps file order; reorder to the requested column order.
    let projected: Vec<usize> = {
        let kept: Vec<&String> = {
            let mut sorted = roots.clone();
            sorted.sort_unstable();
            sorted
                .iter()
                .map(|&i| arrow_schema.field(i).name())
                .collect()
        };
        columns
            .iter()
            .map(|c| kept.iter().position(|k| *k == c).unwrap_or(0))
            .collect()
    };
    let path = file.clone();
    Ok(stream.map(move |batch| {
        let batch = batch.map_err(|e| DataFusionError::Execution(format!("{path}: {e}")))?;
        Ok(batch.project(&projected)?)
    }))
}

/// Assigns each row its 0-based position among the rows of the same prompt seen so far.
struct Numbering {
    column: usize,
    seen: HashMap<String, i64>,
}

impl Numbering {
    fn new(column: usize) -> Self {
        Self {
            column,
            seen: HashMap::new(),
        }
    }

    fn number(&mut self, ids: &ArrayRef) -> datafusion::error::Result<ArrayRef> {
        let mut out = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let Some(id) = string_at(ids, i) else {
                return Err(DataFusionError::Execution(
                    "prompt_id must not be null".into(),
                ));
            };
            let next = match self.seen.get_mut(id) {
                Some(n) => n,
                None => self.seen.entry(id.to_string()).or_insert(0),
            };
            out.push(*next);
            *next += 1;
        }
        Ok(Arc::new(Int64Array::from(out)))
    }
}
