//! `xml`: an element tree, read with quick-xml.

use std::fmt;

use super::{FormatError, quantity_value};

/// One XML element: local name, concatenated text, child elements.
#[derive(Debug, Default)]
struct XmlElement {
    name: String,
    text: String,
    children: Vec<XmlElement>,
}

fn parse(body: &[u8]) -> Result<XmlElement, FormatError> {
    use quick_xml::events::Event;
    let err = |e: &dyn fmt::Display| FormatError::unparsable("xml", e);
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut root: Option<XmlElement> = None;
    let name_of =
        |e: &quick_xml::events::BytesStart<'_>| String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
    loop {
        let event = reader.read_event().map_err(|e| err(&e))?;
        match event {
            Event::Start(e) => stack.push(XmlElement {
                name: name_of(&e),
                ..Default::default()
            }),
            Event::Empty(e) => {
                let el = XmlElement {
                    name: name_of(&e),
                    ..Default::default()
                };
                attach(&mut stack, &mut root, el)?;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| err(&"unexpected closing tag"))?;
                attach(&mut stack, &mut root, el)?;
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| err(&e))?;
                let entity = format!("&{name};");
                let text = quick_xml::escape::unescape(&entity).map_err(|e| err(&e))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(err(&"unexpected end of document"));
    }
    root.ok_or_else(|| err(&"no root element"))
}

fn attach(
    stack: &mut [XmlElement],
    root: &mut Option<XmlElement>,
    el: XmlElement,
) -> Result<(), FormatError> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_none() => *root = Some(el),
        None => return Err(FormatError::unparsable("xml", "more than one root element")),
    }
    Ok(())
}

/// Segments name child elements below the root element; a numeric segment picks one of several
/// same-named siblings; walking stops at the first element without children.
pub(super) fn value(body: &[u8], path: &str) -> Result<f64, FormatError> {
    let root = parse(body)?;
    // Either one element, or a run of same-named siblings awaiting an index segment.
    let mut cur: Vec<&XmlElement> = vec![&root];
    for seg in path.split('.') {
        if let [el] = cur.as_slice()
            && el.children.is_empty()
        {
            break;
        }
        cur = match cur.as_slice() {
            [el] => el.children.iter().filter(|c| c.name == seg).collect(),
            many => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| many.get(i).copied())
                .into_iter()
                .collect(),
        };
        if cur.is_empty() {
            return Err(FormatError::KeyNotFound(seg.to_string()));
        }
    }
    match cur.as_slice() {
        [el] if el.children.is_empty() => {
            let text = el.text.trim();
            if text.is_empty() {
                Err(FormatError::wrong_type(path, "empty element"))
            } else {
                quantity_value(text)
            }
        }
        [_] => Err(FormatError::wrong_type(path, "element with children")),
        _ => Err(FormatError::wrong_type(path, "list of elements")),
    }
}
