//! The JUnit XML report: one test suite for the script, one test case per subtest; for a directory
//! of scripts, one document with each script's suite.

use crate::script::Case;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// What a run produced, for its report.
pub struct Run<'a> {
    /// The test suite's name (the script's file stem).
    pub suite: &'a str,
    /// How long the script ran.
    pub time: Duration,
    /// The subtests, in the order they ended.
    pub cases: Vec<Case>,
    /// The error the script ended with.
    pub failure: Option<&'a str>,
    /// The whole log, for a failure outside every subtest.
    pub output: String,
    /// The coverage summary line, when a coverage report was made.
    pub coverage: Option<String>,
}

/// Writes `run` to `file` as JUnit XML.
pub fn write(file: &Path, run: Run) -> anyhow::Result<()> {
    write_suites(file, vec![suite_of(run)])
}

/// The test suite of `run`.
fn suite_of(run: Run) -> TestSuite {
    let mut suite = TestSuite::new(run.suite);
    suite.set_time(run.time);
    if let Some(coverage) = &run.coverage {
        suite.add_property(("coverage", coverage.as_str()));
    }
    // A failure no subtest reports (a step outside them, a global timeout between them) still
    // needs a test case, or the suite would look green.
    let outside = run
        .failure
        .filter(|_| run.cases.iter().all(|c| c.failure.is_none()));
    for case in run.cases {
        suite.add_test_case(test_case(
            run.suite,
            &case.name,
            case.time,
            case.failure.as_deref(),
            &case.output,
        ));
    }
    if let Some(failure) = outside {
        suite.add_test_case(test_case(
            run.suite,
            run.suite,
            run.time,
            Some(failure),
            &run.output,
        ));
    }
    if suite.test_cases.is_empty() {
        suite.add_test_case(test_case(run.suite, run.suite, run.time, None, &run.output));
    }
    suite
}

/// Writes `suites` to `file` as one JUnit XML document.
pub fn write_suites(file: &Path, suites: Vec<TestSuite>) -> anyhow::Result<()> {
    let mut report = Report::new("vm-test-driver");
    report.add_test_suites(suites);
    let f = std::fs::File::create(file)?;
    let mut w = std::io::BufWriter::new(f);
    report.serialize(&mut w)?;
    w.flush()?;
    Ok(())
}

/// The one test suite of a JUnit file this binary wrote for one script.
pub fn read_suite(file: &Path) -> anyhow::Result<TestSuite> {
    let xml = std::fs::read_to_string(file)?;
    let report = Report::deserialize_from_str(&xml)?;
    report
        .test_suites
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} holds no test suite", file.display()))
}

/// A suite of one failed test case, for a script whose run wrote no report of its own.
pub fn failed_suite(name: &str, time: Duration, failure: &str, output: &str) -> TestSuite {
    suite_of(Run {
        suite: name,
        time,
        cases: Vec::new(),
        failure: Some(failure),
        output: output.into(),
        coverage: None,
    })
}

/// A failed test case named `name` (in the class `name`).
pub fn failed_case(name: &str, time: Duration, failure: &str, output: &str) -> TestCase {
    test_case(name, name, time, Some(failure), output)
}

/// A suite of one skipped test case, for a script that did not run.
pub fn skipped_suite(name: &str, why: &str) -> TestSuite {
    let mut status = TestCaseStatus::skipped();
    status.set_message(why);
    let mut case = TestCase::new(name, status);
    case.set_classname(name);
    let mut suite = TestSuite::new(name);
    suite.add_test_case(case);
    suite
}

fn test_case(
    class: &str,
    name: &str,
    time: Duration,
    failure: Option<&str>,
    output: &str,
) -> TestCase {
    let status = match failure {
        None => TestCaseStatus::success(),
        Some(message) => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            // The first line is the summary CI systems show; the rest is the detail.
            s.set_message(message.lines().next().unwrap_or_default());
            s.set_description(message);
            s
        }
    };
    let mut case = TestCase::new(name, status);
    case.set_classname(class);
    case.set_time(time);
    case.set_system_out(output);
    case
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, failure: Option<&str>) -> Case {
        Case {
            name: name.into(),
            time: Duration::from_millis(1500),
            failure: failure.map(String::from),
            output: format!("[   1.000s] output of {name} \u{1b}[0m <&>"),
        }
    }

    fn written(run: Run) -> String {
        let dir =
            std::env::temp_dir().join(format!("vmtd-junit-{}-{}", std::process::id(), run.suite));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("junit.xml");
        write(&file, run).unwrap();
        let xml = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        xml
    }

    #[test]
    fn each_subtest_is_a_case_and_the_failing_one_carries_its_message_and_output() {
        let xml = written(Run {
            suite: "cases",
            time: Duration::from_secs(3),
            cases: vec![
                case("boots", None),
                case("serves > http", Some("command `curl` failed\nexit 7")),
            ],
            failure: Some("subtest \"serves\" failed"),
            output: String::new(),
            coverage: Some("9 of 15 lines hit".into()),
        });
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        let suite = &parsed.test_suites[0];
        assert_eq!((suite.tests, suite.failures), (2, 1), "{xml}");
        assert_eq!(suite.test_cases[0].name.as_str(), "boots");
        assert!(matches!(
            suite.test_cases[0].status,
            TestCaseStatus::Success { .. }
        ));
        assert_eq!(suite.test_cases[1].name.as_str(), "serves > http");
        assert!(xml.contains("message=\"command `curl` failed\""), "{xml}");
        assert!(xml.contains("output of serves &gt; http"), "{xml}");
        assert!(xml.contains("&lt;&amp;&gt;"), "{xml}");
        assert!(
            xml.contains("<property name=\"coverage\" value=\"9 of 15 lines hit\"/>"),
            "{xml}"
        );
        // The terminal escape from a guest's console is not valid XML and must not be written.
        assert!(!xml.contains('\u{1b}'), "{xml}");
    }

    #[test]
    fn a_failure_outside_subtests_gets_a_case_of_its_own() {
        let xml = written(Run {
            suite: "outside",
            time: Duration::from_secs(3),
            cases: vec![case("boots", None)],
            failure: Some(
                "the global timeout of 5 s ran out while: vm: waiting for unit x (5.0 s)",
            ),
            output: "whole log".into(),
            coverage: None,
        });
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        let suite = &parsed.test_suites[0];
        assert_eq!((suite.tests, suite.failures), (2, 1), "{xml}");
        assert_eq!(suite.test_cases[1].name.as_str(), "outside");
        assert!(xml.contains("global timeout of 5 s"), "{xml}");
    }

    #[test]
    fn a_script_without_subtests_is_one_case() {
        let xml = written(Run {
            suite: "plain",
            time: Duration::from_secs(1),
            cases: vec![],
            failure: None,
            output: "whole log".into(),
            coverage: None,
        });
        let parsed = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(parsed.test_suites[0].tests, 1, "{xml}");
    }
}
