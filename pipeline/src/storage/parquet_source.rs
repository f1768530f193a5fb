//! Parquet read through `object_store`: [`ParquetSource`] gives the Parquet reader the footer in
//! one request and column chunks as ranged GETs, with store errors named by location.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::{ParquetError, Result as ParquetResult};
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;

use object_store::ObjectStoreExt;

use super::{Location, storage_error};
use crate::error::{Error, Result};

/// Reads a Parquet object through its store: the footer in one request (a 64 KiB suffix holds
/// it for most files), column chunks as ranged GETs.
pub struct ParquetSource {
    location: Location,
    size: u64,
}

impl ParquetSource {
    /// A reader of `location`; its size comes from an earlier listing, else a head request.
    pub async fn open(location: &Location) -> Result<Self> {
        let Some(size) = location.meta().await?.map(|m| m.size) else {
            return Err(Error::NotFound {
                path: location.to_string(),
            });
        };
        Ok(Self {
            location: location.clone(),
            size,
        })
    }
}

fn parquet_io_error(location: &Location, error: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(storage_error(location, error)))
}

impl AsyncFileReader for ParquetSource {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        Box::pin(async move {
            self.location
                .store
                .get_range(&self.location.path, range)
                .await
                .map_err(|e| parquet_io_error(&self.location, e))
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        Box::pin(async move {
            self.location
                .store
                .get_ranges(&self.location.path, &ranges)
                .await
                .map_err(|e| parquet_io_error(&self.location, e))
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_metadata_options(options.map(|o| o.metadata_options().clone()))
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}
