//! Writes a leaf's rows to Parquet, with the types of [`super::schema`].

use super::schema::{Inferred, Ty};
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use distill_storage::{Row, Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Rows per Parquet row group (and per Arrow batch built in memory).
pub const ROWS_PER_GROUP: usize = 10_000;

/// The Arrow type of an inferred type.
pub fn data_type(ty: &Ty) -> DataType {
    match ty {
        Ty::Null | Ty::Str | Ty::Json => DataType::Utf8,
        Ty::Bool => DataType::Boolean,
        Ty::Int => DataType::Int64,
        Ty::Float => DataType::Float64,
        Ty::Bytes => DataType::Binary,
        Ty::List(inner) => DataType::List(Arc::new(Field::new("item", data_type(inner), true))),
        Ty::Struct(fields) => DataType::Struct(struct_fields(fields)),
    }
}

fn struct_fields(fields: &[(String, Ty)]) -> Fields {
    fields
        .iter()
        .map(|(name, ty)| Field::new(name, data_type(ty), true))
        .collect()
}

/// The Arrow schema of a leaf.
pub fn schema(inferred: &Inferred) -> Schema {
    Schema::new(struct_fields(&inferred.columns))
}

/// Writes Parquet row groups as rows arrive, to a file or to memory.
pub struct LeafWriter<W: Write + Send = File> {
    writer: ArrowWriter<W>,
    schema: Arc<Schema>,
    columns: Vec<(String, Ty)>,
    pending: Vec<Row>,
}

impl LeafWriter<File> {
    /// Creates `path` for rows of the inferred types.
    pub fn create(path: &Path, inferred: &Inferred) -> Result<Self, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        LeafWriter::to(file, inferred).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes what is pending and the file footer.
    pub fn finish(self) -> Result<(), String> {
        self.into_inner().map(|_| ())
    }
}

impl<W: Write + Send> LeafWriter<W> {
    /// Writes rows of the inferred types to `out` (a `Vec<u8>` for a file built in memory).
    pub fn to(out: W, inferred: &Inferred) -> Result<Self, String> {
        let schema = Arc::new(schema(inferred));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
            .build();
        let writer =
            ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| e.to_string())?;
        Ok(Self {
            writer,
            schema,
            columns: inferred.columns.clone(),
            pending: Vec::with_capacity(ROWS_PER_GROUP),
        })
    }

    /// Adds rows; a full group is written out.
    pub fn write(&mut self, rows: Vec<Row>) -> Result<(), String> {
        for row in rows {
            self.pending.push(row);
            if self.pending.len() == ROWS_PER_GROUP {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|(name, ty)| {
                let values: Vec<&Value> = rows
                    .iter()
                    .map(|r| r.get(name).unwrap_or(&Value::Null))
                    .collect();
                build(ty, &values)
            })
            .collect();
        let batch = if arrays.is_empty() {
            let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
            RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
        } else {
            RecordBatch::try_new(self.schema.clone(), arrays)
        }
        .map_err(|e| e.to_string())?;
        self.writer.write(&batch).map_err(|e| e.to_string())
    }

    /// Writes what is pending and the footer; returns the output.
    pub fn into_inner(mut self) -> Result<W, String> {
        self.flush()?;
        self.writer.into_inner().map_err(|e| e.to_string())
    }
}

/// Builds one Arrow array of type `ty` from values (nulls allowed anywhere).
fn build(ty: &Ty, values: &[&Value]) -> ArrayRef {
    match ty {
        Ty::Null | Ty::Str | Ty::Json => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Str(s) => b.append_value(s),
                    other => b.append_value(other.to_json().to_string()),
                }
            }
            Arc::new(b.finish())
        }
        Ty::Bool => {
            let mut b = BooleanBuilder::new();
            for v in values {
                match v {
                    Value::Bool(x) => b.append_value(*x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Ty::Int => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(v.as_int());
            }
            Arc::new(b.finish())
        }
        Ty::Float => {
            let mut b = Float64Builder::new();
            for v in values {
                b.append_option(v.as_f64());
            }
            Arc::new(b.finish())
        }
        Ty::Bytes => {
            let mut b = BinaryBuilder::new();
            for v in values {
                match v {
                    Value::Bytes(x) => b.append_value(x),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        Ty::List(inner) => {
            let mut lengths = Vec::with_capacity(values.len());
            let mut items: Vec<&Value> = Vec::new();
            let mut valid = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    Value::List(xs) => {
                        lengths.push(xs.len());
                        items.extend(xs.iter());
                        valid.push(true);
                    }
                    _ => {
                        lengths.push(0);
                        valid.push(false);
                    }
                }
            }
            let field = Arc::new(Field::new("item", data_type(inner), true));
            Arc::new(ListArray::new(
                field,
                OffsetBuffer::from_lengths(lengths),
                build(inner, &items),
                Some(NullBuffer::from(valid)),
            ))
        }
        Ty::Struct(fields) => {
            let valid: Vec<bool> = values.iter().map(|v| matches!(v, Value::Map(_))).collect();
            let children: Vec<ArrayRef> = fields
                .iter()
                .map(|(name, t)| {
                    let column: Vec<&Value> = values
                        .iter()
                        .map(|v| match v {
                            Value::Map(row) => row.get(name).unwrap_or(&Value::Null),
                            _ => &Value::Null,
                        })
                        .collect();
                    build(t, &column)
                })
                .collect();
            if fields.is_empty() {
                return Arc::new(StructArray::new_empty_fields(
                    values.len(),
                    Some(NullBuffer::from(valid)),
                ));
            }
            Arc::new(StructArray::new(
                struct_fields(fields),
                children,
                Some(NullBuffer::from(valid)),
            ))
        }
    }
}
