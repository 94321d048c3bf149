//! Server-Sent Events as a build's event stream (`…/log`) sends them.

/// One Server-Sent Event: its name and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub name: String,
    pub data: String,
}

/// Reads `text/event-stream` as it arrives, in chunks that may split lines
/// anywhere (only the fields envstore sends: `event` and `data`).
#[derive(Default)]
pub struct EventParser {
    buffer: Vec<u8>,
    name: Option<String>,
    data: Vec<String>,
}

impl EventParser {
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<StreamEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || self.name.is_some() {
                    events.push(StreamEvent {
                        name: self.name.take().unwrap_or_else(|| "message".to_owned()),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.name = Some(value.to_owned()),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_whatever_the_chunks_split() {
        let stream = b"event: status\ndata: {\"status\":\"running\"}\n\nevent: line\r\ndata: linking 2/5 python\n\n: keep-alive\n\nevent: end\ndata: a\ndata: b\n\n";
        for size in [1, 3, 7, stream.len()] {
            let mut parser = EventParser::default();
            let events: Vec<StreamEvent> = stream
                .chunks(size)
                .flat_map(|chunk| parser.feed(chunk))
                .collect();
            let names: Vec<&str> = events.iter().map(|event| event.name.as_str()).collect();
            assert_eq!(names, ["status", "line", "end"], "chunks of {size}");
            assert_eq!(events[1].data, "linking 2/5 python");
            assert_eq!(events[2].data, "a\nb");
        }
    }
}
