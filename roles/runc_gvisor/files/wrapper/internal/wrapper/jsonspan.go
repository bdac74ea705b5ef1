// SPDX-License-Identifier: Apache-2.0

package wrapper

import (
	"bytes"
	"encoding/json"
)

// A tiny scanner that finds where values sit inside a JSON document, so the
// wrapper can replace the one value it changes and leave every other byte of
// config.json as it was. encoding/json can only re-encode, which would
// re-order keys (maps), re-indent and re-escape the whole spec; splicing keeps
// what the shim and later tools see identical apart from the intended change.
//
// Every function here expects a document that encoding/json already found
// valid (see checkJSON), so it does not re-check the grammar.

// span is the half-open byte range [start, end) of a value in a document.
type span struct{ start, end int }

func (s span) in(doc []byte) []byte { return doc[s.start:s.end] }

// member is one "key": value pair of an object.
type member struct {
	key   string // unescaped
	whole span   // from the key's opening quote to the value's last byte
	value span
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(doc []byte, i int) int {
	for i < len(doc) && isSpace(doc[i]) {
		i++
	}
	return i
}

// rootValue is the span of the document's single top-level value.
func rootValue(doc []byte) span {
	start := skipSpace(doc, 0)
	return span{start, valueEnd(doc, start)}
}

// valueEnd returns the index just past the value that starts at i.
func valueEnd(doc []byte, i int) int {
	switch doc[i] {
	case '"':
		return stringEnd(doc, i)
	case '{', '[':
		return compositeEnd(doc, i)
	default: // number, true, false, null
		for i < len(doc) && !isSpace(doc[i]) && doc[i] != ',' && doc[i] != '}' && doc[i] != ']' {
			i++
		}
		return i
	}
}

// stringEnd returns the index just past the string whose quote is at i.
func stringEnd(doc []byte, i int) int {
	for i++; doc[i] != '"'; i++ {
		if doc[i] == '\\' {
			i++ // the escaped byte cannot close the string
		}
	}
	return i + 1
}

// compositeEnd returns the index just past the object or array opened at i.
func compositeEnd(doc []byte, i int) int {
	depth := 0
	for ; ; i++ {
		switch doc[i] {
		case '"':
			i = stringEnd(doc, i) - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
}

// kind is the first byte of a value: '{', '[', '"', 'n' (null), 't', 'f' or a
// digit or '-'.
func kind(doc []byte, v span) byte { return doc[v.start] }

// elements returns the spans of an array's elements.
func elements(doc []byte, array span) []span {
	var out []span
	i := skipSpace(doc, array.start+1)
	for doc[i] != ']' {
		end := valueEnd(doc, i)
		out = append(out, span{i, end})
		i = skipSpace(doc, end)
		if doc[i] == ',' {
			i = skipSpace(doc, i+1)
		}
	}
	return out
}

// members returns an object's members in document order, duplicates included.
func members(doc []byte, object span) []member {
	var out []member
	i := skipSpace(doc, object.start+1)
	for doc[i] != '}' {
		keyEnd := stringEnd(doc, i)
		key := unquote(doc[i:keyEnd])
		valueStart := skipSpace(doc, skipSpace(doc, keyEnd)+1) // past the ':'
		end := valueEnd(doc, valueStart)
		out = append(out, member{key: key, whole: span{i, end}, value: span{valueStart, end}})
		i = skipSpace(doc, end)
		if doc[i] == ',' {
			i = skipSpace(doc, i+1)
		}
	}
	return out
}

// unquote decodes a JSON string literal as encoding/json does. Only one
// with escapes or bytes beyond ASCII needs encoding/json: it unescapes, and
// it decodes invalid UTF-8 as U+FFFD, which a plain copy would not.
func unquote(literal []byte) string {
	plain := true
	for _, c := range literal {
		if c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if plain {
		return string(literal[1 : len(literal)-1])
	}
	var s string
	_ = json.Unmarshal(literal, &s) // valid by contract
	return s
}

// rebuild writes a container (object or array) anew with only the parts kept,
// reusing the original's bytes around its first and after its last part and
// its separator, so a compact spec stays compact and an indented one keeps
// its indentation. parts are the container's members or elements as spans;
// kept holds the bytes of each part to keep, already changed if need be.
func rebuild(doc []byte, container span, parts []span, kept [][]byte) []byte {
	open, close := doc[container.start], doc[container.end-1]
	if len(kept) == 0 {
		return []byte{open, close}
	}
	head := doc[container.start:parts[0].start]
	tail := doc[parts[len(parts)-1].end:container.end]
	separator := []byte(",")
	if len(parts) > 1 {
		separator = doc[parts[0].end:parts[1].start]
	}
	var out bytes.Buffer
	out.Write(head)
	out.Write(bytes.Join(kept, separator))
	out.Write(tail)
	return out.Bytes()
}

// splice returns a copy of doc with the bytes at one span replaced.
func splice(doc []byte, at span, with []byte) []byte {
	out := make([]byte, 0, len(doc)-(at.end-at.start)+len(with))
	out = append(out, doc[:at.start]...)
	out = append(out, with...)
	return append(out, doc[at.end:]...)
}
