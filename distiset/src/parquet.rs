//! Writes a leaf's rows to Parquet, with the types of [`crate::schema`].

use crate::error::{Error, Result};
use crate::schema::{Inferred, Ty};
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, ListArray, RecordBatch, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};
use distill_storage::{Row, Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

/// Rows per Parquet row group (and per Arrow batch built in memory).
pub const ROWS_PER_GROUP: usize = 10_000;

/// The Arrow type of an inferred type.
pub fn data_type(ty: &Ty) -> DataType {
    match ty {
        Ty::Null | Ty::Str | Ty::Json => DataType::Utf8,
        Ty::Bool => DataType::Boolean,
        Ty::Int | Ty::NonNegInt => DataType::Int64,
        Ty::UInt => DataType::UInt64,
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
pub fn arrow_schema(inferred: &Inferred) -> Schema {
    Schema::new(struct_fields(&inferred.columns))
}

/// Writes `batches` of rows to `out` as Parquet with the column types `schema` (inferred
/// beforehand, see [`Inferred`]), in row groups of [`ROWS_PER_GROUP`] rows; returns `out` and
/// the number of rows. The export and the Hub's shards both write through here.
pub fn write_parquet<W: Write + Send, E>(
    out: W,
    schema: &Inferred,
    batches: impl IntoIterator<Item = std::result::Result<Vec<Row>, E>>,
) -> Result<(W, u64)>
where
    Error: From<E>,
{
    let (out, written) = write_parquet_counted(out, schema, batches)?;
    Ok((out, written.rows))
}

/// What [`write_parquet_counted`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Per column, the non-finite floats (NaN, ±Infinity) written as JSON null: those inside
    /// a text column of mixed kinds, which holds non-strings as JSON. Float columns keep them.
    pub non_finite_as_null: BTreeMap<String, u64>,
}

/// [`write_parquet`], also counting the non-finite floats it could only write as null.
pub fn write_parquet_counted<W: Write + Send, E>(
    out: W,
    schema: &Inferred,
    batches: impl IntoIterator<Item = std::result::Result<Vec<Row>, E>>,
) -> Result<(W, Written)>
where
    Error: From<E>,
{
    let mut writer = LeafWriter::to(out, schema)?;
    let mut rows = 0;
    for batch in batches {
        let batch = batch?;
        rows += batch.len() as u64;
        writer.write(batch)?;
    }
    let (out, lost) = writer.into_inner()?;
    let non_finite_as_null = schema
        .columns
        .iter()
        .zip(lost)
        .filter(|(_, n)| *n > 0)
        .map(|((name, _), n)| (name.clone(), n))
        .collect();
    Ok((
        out,
        Written {
            rows,
            non_finite_as_null,
        },
    ))
}

/// Writes Parquet row groups as rows arrive.
struct LeafWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: Arc<Schema>,
    columns: Vec<(String, Ty)>,
    pending: Vec<Row>,
    /// Per column, non-finite floats written as JSON null.
    lost: Vec<u64>,
}

impl<W: Write + Send> LeafWriter<W> {
    fn to(out: W, inferred: &Inferred) -> Result<Self> {
        let schema = Arc::new(arrow_schema(inferred));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROWS_PER_GROUP))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(Self {
            writer,
            schema,
            columns: inferred.columns.clone(),
            lost: vec![0; inferred.columns.len()],
            pending: Vec::with_capacity(ROWS_PER_GROUP),
        })
    }

    /// Adds rows; a full group is written out.
    fn write(&mut self, rows: Vec<Row>) -> Result<()> {
        for row in rows {
            self.pending.push(row);
            if self.pending.len() == ROWS_PER_GROUP {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let batch = arrow_batch(&self.schema, &self.columns, &rows, &mut self.lost)?;
        self.writer.write(&batch)?;
        Ok(())
    }

    /// Writes what is pending and the footer; returns the output and the per-column counts
    /// of non-finite floats written as null.
    fn into_inner(mut self) -> Result<(W, Vec<u64>)> {
        self.flush()?;
        Ok((self.writer.into_inner()?, self.lost))
    }
}

/// `rows` as one Arrow record batch with the column types `schema` (inferred beforehand, see
/// [`Inferred`]): the arrays the Parquet export writes, for readers in memory (the Python
/// package's `load` and its Arrow steps).
pub fn record_batch(schema: &Inferred, rows: &[Row]) -> Result<RecordBatch> {
    let arrow = Arc::new(arrow_schema(schema));
    let mut lost = vec![0; schema.columns.len()];
    arrow_batch(&arrow, &schema.columns, rows, &mut lost)
}

fn arrow_batch(
    schema: &Arc<Schema>,
    columns: &[(String, Ty)],
    rows: &[Row],
    lost: &mut [u64],
) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .zip(lost.iter_mut())
        .map(|((name, ty), lost)| {
            let values: Vec<&Value> = rows
                .iter()
                .map(|r| r.get(name).unwrap_or(&Value::Null))
                .collect();
            build(ty, &values, lost)
        })
        .collect();
    let batch = if arrays.is_empty() {
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
        RecordBatch::try_new_with_options(schema.clone(), arrays, &options)
    } else {
        RecordBatch::try_new(schema.clone(), arrays)
    }?;
    Ok(batch)
}

/// Builds one Arrow array of type `ty` from values (nulls allowed anywhere); counts in `lost`
/// the non-finite floats that text written as JSON can only hold as null.
fn build(ty: &Ty, values: &[&Value], lost: &mut u64) -> ArrayRef {
    match ty {
        Ty::Null | Ty::Str | Ty::Json => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Value::Null => b.append_null(),
                    Value::Str(s) => b.append_value(s),
                    other => {
                        *lost += crate::schema::non_finite(other);
                        b.append_value(other.to_json().to_string())
                    }
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
        Ty::Int | Ty::NonNegInt => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(v.as_int());
            }
            Arc::new(b.finish())
        }
        Ty::UInt => {
            let mut b = UInt64Builder::new();
            for v in values {
                b.append_option(v.as_u64());
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
                build(inner, &items, lost),
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
                    build(t, &column, lost)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_floats_in_a_text_column_are_counted_and_float_columns_keep_them() {
        let rows = vec![
            Row::new()
                .with("f", f64::NAN)
                .with("mixed", vec![f64::INFINITY, 1.0]),
            Row::new().with("f", 1.0).with("mixed", "text"),
        ];
        let mut inferred = Inferred::default();
        rows.iter().for_each(|r| inferred.add(r));
        assert_eq!(inferred.columns[1].1, Ty::Json);
        let (_, written) =
            write_parquet_counted(Vec::new(), &inferred, [Ok::<_, Error>(rows)]).unwrap();
        assert_eq!(written.rows, 2);
        assert_eq!(
            written.non_finite_as_null,
            BTreeMap::from([("mixed".to_owned(), 1)])
        );
    }
}
