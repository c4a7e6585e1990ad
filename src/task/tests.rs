//! Unit tests of the task data: the synthetic rule, k-shot sampling, file
//! formats, label words, the held-out split and text windows.

use super::*;

fn task() -> Synthetic {
    Synthetic {
        seq_len: 12,
        vocab: 32,
        signal_tokens: 6,
        dev_size: 1000,
    }
}

#[test]
fn labels_follow_the_rule_and_are_balanced() {
    let dev = task().dev(1, 1000).remove(0);
    assert_eq!(dev.len(), 1000);
    let ones = dev.labels.iter().filter(|&&l| l == 1).count();
    assert!((400..600).contains(&ones), "{ones}");
    for (x, &y) in dev.inputs.iter().zip(&dev.labels) {
        let pos = x.iter().filter(|&&t| (1..=6).contains(&t)).count();
        let neg = x.iter().filter(|&&t| (7..=12).contains(&t)).count();
        assert_eq!(y, u32::from(pos > neg));
    }
}

fn prompt(dir: &Path, k: usize) -> Prompt {
    let train = dir.join("train.tsv");
    let mut t = String::from("sentence\tlabel\n");
    for i in 0..100 {
        t += &format!("s{i} \t{}\n", i % 2);
    }
    std::fs::write(&train, t).unwrap();
    let dev = dir.join("dev.jsonl");
    std::fs::write(
        &dev,
        "{\"sentence\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 0}\n",
    )
    .unwrap();
    Prompt {
        train: train.display().to_string(),
        dev: dev.display().to_string(),
        template: "{sentence} It was".into(),
        labels: vec![" bad".into(), " good".into()],
        k_per_class: k,
        dev_size: 0,
        text_column: None,
        label_column: None,
        label_values: Vec::new(),
        skip_values: Vec::new(),
        dev_fraction: 0.0,
    }
}

fn fake_tokenize(s: &str) -> Result<Vec<u32>, String> {
    Ok(s.bytes().map(u32::from).collect())
}

#[test]
fn prompt_data_samples_k_per_class_and_reads_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let p = prompt(dir.path(), 5);
    p.validate("run.task").unwrap();
    let d = p.load(3, &fake_tokenize).unwrap();
    assert_eq!(d.pool.len(), 10);
    assert_eq!(d.pool.iter().filter(|(_, y)| *y == 1).count(), 5);
    assert_eq!(d, p.load(3, &fake_tokenize).unwrap());
    assert_ne!(d.pool, p.load(4, &fake_tokenize).unwrap().pool);
    assert_eq!(d.dev.len(), 2);
    assert_eq!(d.dev[0], (fake_tokenize("a It was").unwrap(), 1));
    let a = d.train_batch(&Origin([1; 32]), 0, 8);
    assert_eq!(a.len(), 8);
    assert_eq!(a, d.train_batch(&Origin([1; 32]), 0, 8));
    assert_ne!(a, d.train_batch(&Origin([2; 32]), 0, 8));
    let all = prompt(dir.path(), 0).load(3, &fake_tokenize).unwrap();
    assert_eq!(all.pool.len(), 100);
}

#[test]
fn bad_data_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.tsv");
    std::fs::write(&f, "sentence\tlabel\nok\t1\nbad\t7\n").unwrap();
    let cols = prompt(dir.path(), 1);
    let e = cols.read(&f).unwrap_err().to_string();
    assert!(e.contains("x.tsv") && e.contains("line 3"), "{e}");
    std::fs::write(&f, "words\tlabel\n").unwrap();
    let e = cols.read(&f).unwrap_err().to_string();
    assert!(e.contains("sentence"), "{e}");
    let mut p = prompt(dir.path(), 1);
    p.template = "no slot".into();
    assert!(p
        .validate("run.task")
        .unwrap_err()
        .contains("run.task.template"));
}

#[test]
fn nodes_get_different_deterministic_data() {
    let t = task();
    let a = t.train_batch(1, &Origin([1; 32]), 0, 8);
    assert_eq!(a, t.train_batch(1, &Origin([1; 32]), 0, 8));
    assert_ne!(a, t.train_batch(1, &Origin([2; 32]), 0, 8));
    assert_ne!(a, t.train_batch(1, &Origin([1; 32]), 1, 8));
}

const QUOTED: &str = "id,review,category\n\
    1,\"good, really good\",fresh\n\
    2,\"she said \"\"meh\"\"\",rotten\n\
    3,\"two\nlines\",fresh\n\
    4,a plot summary,plot\n";

fn rt(dir: &Path, file: &Path) -> Prompt {
    let mut p = prompt(dir, 0);
    p.train = file.display().to_string();
    p.dev = p.train.clone();
    p.label_column = Some("category".into());
    p.label_values = vec!["rotten".into(), "fresh".into()];
    p.skip_values = vec!["plot".into()];
    p
}

#[test]
fn csv_quoting_label_words_and_bzip2() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("rt.csv");
    std::fs::write(&plain, QUOTED).unwrap();
    let packed = dir.path().join("rt.csv.bz2");
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    enc.write_all(QUOTED.as_bytes()).unwrap();
    std::fs::write(&packed, enc.finish().unwrap()).unwrap();
    let want = vec![
        ("good, really good".to_string(), 1),
        ("she said \"meh\"".to_string(), 0),
        ("two\nlines".to_string(), 1),
    ];
    for f in [&plain, &packed] {
        let p = rt(dir.path(), f);
        p.validate("run.task").unwrap();
        assert_eq!(p.read(f).unwrap(), want, "{}", f.display());
    }
    assert_eq!(Format::of(&packed), Some(Format::Csv));
    assert_eq!(Format::of(Path::new("a.TXT.bz2")), Some(Format::Txt));
    assert_eq!(Format::of(Path::new("a.parquet")), None);
    // The auto-detected text column is `review`; the label column is named.
    let mut p = rt(dir.path(), &plain);
    p.text_column = Some("id".into());
    assert_eq!(p.read(&plain).unwrap()[0].0, "1");
    // Not bzip2 at all.
    let fake = dir.path().join("fake.csv.bz2");
    std::fs::write(&fake, QUOTED).unwrap();
    let e = p.read(&fake).unwrap_err().to_string();
    assert!(e.contains("fake.csv.bz2") && e.contains("bzip2"), "{e}");
}

#[test]
fn unknown_label_values_name_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rt.csv");
    std::fs::write(&f, QUOTED).unwrap();
    let mut p = rt(dir.path(), &f);
    p.skip_values.clear();
    let e = p.read(&f).unwrap_err().to_string();
    assert!(
        e.contains("\"plot\"") && e.contains("run.task.label_values") && e.contains("line 6"),
        "{e}"
    );
    // Word labels without a mapping.
    p.label_values.clear();
    let e = p.read(&f).unwrap_err().to_string();
    assert!(
        e.contains("run.task.label_values") && e.contains("line 2"),
        "{e}"
    );
    let mut p = rt(dir.path(), &f);
    p.label_values = vec!["rotten".into()];
    let e = p.validate("run.task").unwrap_err();
    assert!(e.contains("run.task.label_values"), "{e}");
    let mut p = rt(dir.path(), &f);
    p.label_column = Some("verdict".into());
    let e = p.read(&f).unwrap_err().to_string();
    assert!(e.contains("verdict") && e.contains("line 1"), "{e}");
    let mut p = rt(dir.path(), &f);
    p.dev_fraction = 1.5;
    let e = p.validate("run.task").unwrap_err();
    assert!(e.contains("run.task.dev_fraction"), "{e}");
}

#[test]
fn held_out_split_is_disjoint_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("corpus.jsonl");
    let mut t = String::new();
    for i in 0..400 {
        t += &format!(
            "{{\"text\": \"review number {i}\", \"label\": \"{}\"}}\n",
            ["neg", "pos"][i % 2]
        );
    }
    std::fs::write(&f, t).unwrap();
    let mut p = rt(dir.path(), &f);
    p.label_column = None;
    p.label_values = vec!["neg".into(), "pos".into()];
    p.dev_fraction = 0.25;
    p.validate("run.task").unwrap();
    let d = p.load(1, &fake_tokenize).unwrap();
    assert_eq!(d.pool.len() + d.dev.len(), 400);
    assert!((60..140).contains(&d.dev.len()), "{}", d.dev.len());
    for (x, _) in &d.dev {
        assert!(!d.pool.iter().any(|(y, _)| y == x));
    }
    // Independent of the run seed.
    assert_eq!(p.load(2, &fake_tokenize).unwrap().dev, d.dev);
}

fn text_task(train: &Path) -> Text {
    Text {
        train: train.display().to_string(),
        dev: train.display().to_string(),
        column: None,
        seq_len: 4,
        documents: Documents::Line,
        max_train: 0,
        dev_size: 0,
        dev_fraction: 0.0,
    }
}

#[test]
fn text_documents_become_token_windows() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("doc.txt");
    std::fs::write(&f, "abcdefghij\n\nxy\nz\n").unwrap();
    let t = text_task(&f);
    t.validate("run.task").unwrap();
    let d = t.load(1, &fake_tokenize).unwrap();
    let w: Vec<String> = d
        .pool
        .iter()
        .map(|(x, y)| {
            assert_eq!(*y, 0);
            x.iter().map(|&c| c as u8 as char).collect()
        })
        .collect();
    // "ij" is a short last window; "z" has no next token to predict.
    assert_eq!(w, ["abcd", "efgh", "ij", "xy"]);
    let mut whole = text_task(&f);
    whole.documents = Documents::File;
    assert_eq!(whole.read(&f).unwrap().len(), 1);
    let mut few = text_task(&f);
    few.max_train = 2;
    assert_eq!(few.load(1, &fake_tokenize).unwrap().pool.len(), 2);
    // A CSV column (quoted, multi-line).
    let c = dir.path().join("rt.csv");
    std::fs::write(&c, QUOTED).unwrap();
    let mut t = text_task(&c);
    t.column = Some("review".into());
    assert_eq!(t.read(&c).unwrap()[2], "two\nlines");
    t.seq_len = 1;
    assert!(t
        .validate("run.task")
        .unwrap_err()
        .contains("run.task.seq_len"));
    let mut t = text_task(&dir.path().join("x.parquet"));
    t.dev = f.display().to_string();
    assert!(t
        .validate("run.task")
        .unwrap_err()
        .contains("run.task.train"));
}
